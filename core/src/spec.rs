//! The pipeline spec: what a user writes in `pipeline.toml`.
//!
//! ```toml
//! [pipeline]
//! name = "retail"
//!
//! [bronze.orders_raw]
//! path = "data/orders/*.ndjson"      # file, glob or URL, relative to the spec's folder
//! format = "ndjson"                  # parquet | csv | ndjson; default from the extension
//!
//! [silver.orders]
//! sql = "SELECT * FROM orders_raw"
//! casts = { order_id = "bigint" }
//! dedupe = { key = ["order_id"], order_by = "updated_at" }
//! expect = [{ name = "has_customer", condition = "customer_id IS NOT NULL", on_violation = "drop" }]
//!
//! [gold.orders_per_day]
//! sql = "SELECT date_trunc('day', order_ts) AS day, count(*) AS orders FROM orders GROUP BY 1"
//! ```
//!
//! A bronze table may instead come from a database the host extracts from (the core never
//! connects to it; the host hands it batches, see [`crate::extract`]):
//!
//! ```toml
//! [sources.shop]
//! kind = "postgres"
//! url = "env:SHOP_DATABASE_URL"      # or a literal postgres:// URL
//!
//! [bronze.orders_raw]
//! source = "shop"
//! table = "public.orders"            # or query = "SELECT …"
//! mode = "incremental"               # or "snapshot" (the default), or "cdc"
//! watermark = "updated_at"
//!
//! [bronze.orders_cdc]                # every insert, update and delete, by logical replication
//! source = "shop"
//! table = "public.orders"
//! mode = "cdc"
//! create_slot = true                 # slot and publication `medallion_orders_cdc`
//!
//! [silver.orders]                    # the current state those changes lead to
//! sql = "SELECT * FROM orders_cdc"
//! apply_changes = { keys = ["order_id"], sequence_by = "_lsn", delete_when = "_op = 'D'" }
//! ```

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::parse_type_name;

/// A whole pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    #[serde(default)]
    pub pipeline: PipelineInfo,
    /// Databases that bronze tables are extracted from, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, Source>,
    #[serde(default)]
    pub bronze: BTreeMap<String, BronzeSource>,
    #[serde(default)]
    pub silver: BTreeMap<String, SilverTable>,
    #[serde(default)]
    pub gold: BTreeMap<String, GoldTable>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Write a Delta checkpoint every N commits of each table (default 10), so that tables
    /// with long histories open in a few reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
}

/// A database bronze tables are extracted from (by the host; see [`crate::extract`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    /// A connection URL, or `env:NAME` to read it from an environment variable. It may hold a
    /// password: show it only through [`redact_url`].
    pub url: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
}

/// How a bronze table takes rows from a database source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractMode {
    /// Every row, each run: the bronze table is replaced by the source's current rows.
    #[default]
    Snapshot,
    /// Rows whose `watermark` column is past the greatest value extracted so far, appended.
    Incremental,
    /// Change data capture: a snapshot consistent with a logical replication slot, then every
    /// insert, update and delete, appended as rows with `_op`, `_lsn` and `_commit_ts`.
    Cdc,
}

impl ExtractMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtractMode::Snapshot => "snapshot",
            ExtractMode::Incremental => "incremental",
            ExtractMode::Cdc => "cdc",
        }
    }
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // The key=value form: `host=db user=a password=secret`.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{}", redact_query_password(tail))
}

/// A `password=` query parameter replaced by `***`.
fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

/// A raw source landing in a bronze table: files (appended to on every run with the files not
/// yet seen), or a table or query of a database [`Source`] that the host extracts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BronzeSource {
    /// A file, a glob (`*`, `**`, `?`, `[ab]`) or an http(s) URL. Empty for database sources.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The name of a database source in `[sources]`, instead of `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// With `source`: the table to extract (`schema.table` or `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// With `source`: a query to extract instead of a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ExtractMode>,
    /// With `mode = "incremental"`: the column whose greatest value extracted is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// With `mode = "cdc"`: the logical replication slot (default `medallion_<table>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// With `mode = "cdc"`: the publication the slot streams (default `medallion_<table>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// With `mode = "cdc"`: create the publication (or add the table to it) and the slot when
    /// they are missing. Without it, a missing one is an error that says how to create it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_slot: bool,
    pub format: Option<Format>,
    /// Declared column types, in order. Without it the schema is inferred from the data.
    #[serde(default)]
    pub schema: Option<BTreeMap<String, String>>,
    /// The declared columns' order, if `schema` is given and order matters (CSV without header).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub csv: CsvOptions,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    #[serde(alias = "json", alias = "jsonl")]
    Ndjson,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_true")]
    pub header: bool,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: ',',
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_delimiter() -> char {
    ','
}

/// A cleaned table: SQL over earlier tables, then casts, expectations and deduplication,
/// in that order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SilverTable {
    pub sql: String,
    /// Column → type. A value that does not convert sends its row to quarantine.
    #[serde(default)]
    pub casts: BTreeMap<String, String>,
    #[serde(default)]
    pub expect: Vec<Expectation>,
    pub dedupe: Option<Dedupe>,
    /// The rows are change events (e.g. a `mode = "cdc"` bronze table): the table holds the
    /// state they lead to (`scd = 1`) or its history (`scd = 2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_changes: Option<ApplyChanges>,
    #[serde(default)]
    pub description: String,
    /// Columns to partition the table by (one folder per value; filters on them skip files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Emit an alert when a row appears under a new key (see [`Alert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

/// An aggregate table, rewritten on every run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GoldTable {
    pub sql: String,
    #[serde(default)]
    pub description: String,
    /// Columns to partition the table by (one folder per value; filters on them skip files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// Emit an alert when a row appears under a new key (see [`Alert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

/// A table whose rows are alerts: a row under a key that was not in the table's previous
/// version (or came back after leaving it) is emitted once, e.g. a product that falls below its
/// reorder level in a warehouse.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub key: Vec<String>,
}

/// A data-quality rule. A row whose condition is false *or NULL* violates it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub name: String,
    pub condition: String,
    #[serde(default)]
    pub on_violation: OnViolation,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// Count the violations, keep the rows.
    #[default]
    Warn,
    /// Move the rows to the table's quarantine.
    Drop,
    /// Fail the run; no table changes.
    Fail,
}

/// Keep one row per key: the one with the greatest `order_by` (nulls lose).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    pub key: Vec<String>,
    pub order_by: String,
}

/// The three layers, in the order data flows through them.
/// Change events applied by key, as Lakeflow's AUTO CDC does: for each key the event with the
/// greatest `sequence_by` wins, whatever order the events arrived in, and duplicates collapse.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyChanges {
    pub keys: Vec<String>,
    /// The column that orders a key's events (for a CDC bronze table, `_lsn`).
    pub sequence_by: String,
    /// A condition true for a delete event, e.g. `_op = 'D'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_when: Option<String>,
    /// 1: one row per live key, its latest values. 2: one row per version of a key, with
    /// `__start_at` (its event's sequence) and `__end_at` (the next event's; NULL while current).
    #[serde(default = "default_scd")]
    pub scd: u8,
    /// Columns left out of the table (e.g. `["_op", "_ingested_at"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_columns: Vec<String>,
}

fn default_scd() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PipelineSpec {
    /// Parses and validates a spec; errors name the table and field at fault.
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|e| Error::Spec(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The columns a table is declared to be partitioned by (none for bronze tables).
    pub fn partition_by(&self, table: &str) -> &[String] {
        if let Some(t) = self.silver.get(table) {
            return &t.partition_by;
        }
        if let Some(t) = self.gold.get(table) {
            return &t.partition_by;
        }
        &[]
    }

    /// The alert a silver or gold table declares.
    pub fn alert(&self, table: &str) -> Option<&Alert> {
        self.silver
            .get(table)
            .and_then(|t| t.alert.as_ref())
            .or_else(|| self.gold.get(table).and_then(|t| t.alert.as_ref()))
    }

    /// Every table with its layer.
    pub fn tables(&self) -> impl Iterator<Item = (&str, Layer)> {
        self.bronze
            .keys()
            .map(|k| (k.as_str(), Layer::Bronze))
            .chain(self.silver.keys().map(|k| (k.as_str(), Layer::Silver)))
            .chain(self.gold.keys().map(|k| (k.as_str(), Layer::Gold)))
    }

    pub fn layer_of(&self, table: &str) -> Option<Layer> {
        self.tables().find(|(t, _)| *t == table).map(|(_, l)| l)
    }

    fn validate(&self) -> Result<()> {
        let mut seen: BTreeMap<&str, Layer> = BTreeMap::new();
        for (name, layer) in self.tables() {
            if !valid_name(name) {
                return Err(Error::Spec(format!(
                    "{layer} table `{name}`: names must be letters, digits and `_`, starting with a letter"
                )));
            }
            if let Some(other) = seen.insert(name, layer) {
                return Err(Error::Spec(format!(
                    "table `{name}` is defined both in [{other}] and in [{layer}]; table names must be unique"
                )));
            }
        }
        for (name, source) in &self.sources {
            if !valid_name(name) {
                return Err(Error::Spec(format!(
                    "source `{name}`: names must be letters, digits and `_`, starting with a letter"
                )));
            }
            if source.url.trim().is_empty() {
                return Err(Error::Spec(format!(
                    "source `{name}`: `url` is empty; give a postgres:// URL or env:VARIABLE"
                )));
            }
        }
        for (name, src) in &self.bronze {
            if src.source.is_some() {
                self.validate_extracted(name, src)?;
                continue;
            }
            if src.path.is_empty() {
                return Err(Error::Spec(format!(
                    "bronze table `{name}`: give `path` (files) or `source` (a database in [sources])"
                )));
            }
            for (field, set) in [
                ("table", src.table.is_some()),
                ("query", src.query.is_some()),
                ("mode", src.mode.is_some()),
                ("watermark", src.watermark.is_some()),
            ] {
                if set {
                    return Err(Error::Spec(format!(
                        "bronze table `{name}`: `{field}` needs `source` (a database in [sources]); file sources take `path`"
                    )));
                }
            }
            src.resolved_format()
                .map_err(|m| Error::Spec(format!("bronze table `{name}`: {m}")))?;
            src.declared_schema()
                .map_err(|m| Error::Spec(format!("bronze table `{name}`: {m}")))?;
            crate::storage::check_location(&src.path)
                .map_err(|e| Error::Spec(format!("bronze table `{name}`: {e}")))?;
        }
        for (name, t) in &self.silver {
            for (col, ty) in &t.casts {
                if parse_type_name(ty).is_none() {
                    return Err(Error::Spec(format!(
                        "silver table `{name}`: cast of `{col}` to unknown type `{ty}`"
                    )));
                }
            }
            let mut names = std::collections::BTreeSet::new();
            for e in &t.expect {
                if !names.insert(e.name.as_str()) {
                    return Err(Error::Spec(format!(
                        "silver table `{name}`: expectation `{}` is defined twice",
                        e.name
                    )));
                }
            }
            if let Some(d) = &t.dedupe {
                if d.key.is_empty() {
                    return Err(Error::Spec(format!(
                        "silver table `{name}`: dedupe needs at least one key column"
                    )));
                }
            }
            if let Some(a) = &t.apply_changes {
                let err = |m: &str| Err(Error::Spec(format!("silver table `{name}`: {m}")));
                if t.dedupe.is_some() {
                    return err("give `dedupe` or `apply_changes`, not both (apply_changes keeps one row per key already)");
                }
                if a.keys.is_empty() {
                    return err("apply_changes needs at least one key column");
                }
                if !matches!(a.scd, 1 | 2) {
                    return err("apply_changes: scd is 1 (current state) or 2 (history)");
                }
            }
        }
        Ok(())
    }
}

impl PipelineSpec {
    fn validate_extracted(&self, name: &str, src: &BronzeSource) -> Result<()> {
        let err = |m: String| Err(Error::Spec(format!("bronze table `{name}`: {m}")));
        let source = src.source.as_deref().unwrap_or_default();
        if !self.sources.contains_key(source) {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            return err(format!(
                "source `{source}` is not defined in [sources] (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        if !src.path.is_empty() || src.format.is_some() || src.schema.is_some() {
            return err(format!(
                "`path`, `format` and `schema` are for files; a table from source `{source}` takes `table` or `query`"
            ));
        }
        match (&src.table, &src.query) {
            (Some(_), Some(_)) => return err("give `table` or `query`, not both".into()),
            (None, None) => {
                return err(format!(
                    "give the `table` (or a `query`) to extract from source `{source}`"
                ))
            }
            _ => {}
        }
        let mode = src.mode.unwrap_or_default();
        if mode != ExtractMode::Cdc {
            for (field, set) in [
                ("slot", src.slot.is_some()),
                ("publication", src.publication.is_some()),
                ("create_slot", src.create_slot),
            ] {
                if set {
                    return err(format!("`{field}` is for mode = \"cdc\""));
                }
            }
        } else {
            if src.table.is_none() {
                return err(
                    "mode = \"cdc\" streams a table's changes: give `table`, not `query`".into(),
                );
            }
            for (what, name) in [
                ("slot", src.slot_name(name)),
                ("publication", src.publication_name(name)),
            ] {
                let ok = !name.is_empty()
                    && name.len() <= 63
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    return err(format!(
                        "{what} name `{name}`: PostgreSQL takes lower-case letters, digits and `_`, at most 63"
                    ));
                }
            }
        }
        match (mode, &src.watermark) {
            (ExtractMode::Incremental, None) => err(
                "mode = \"incremental\" needs `watermark`, the column whose greatest value is recorded"
                    .into(),
            ),
            (ExtractMode::Snapshot | ExtractMode::Cdc, Some(_)) => err(
                "`watermark` is for mode = \"incremental\"; a snapshot extracts every row and cdc every change".into(),
            ),
            _ => Ok(()),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl BronzeSource {
    /// Whether rows come from a database source (extracted by the host) rather than files.
    pub fn is_extracted(&self) -> bool {
        self.source.is_some()
    }

    /// The replication slot of a `mode = "cdc"` table named `table`.
    pub fn slot_name(&self, table: &str) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("medallion_{}", table.to_ascii_lowercase()))
    }

    /// The publication of a `mode = "cdc"` table named `table`.
    pub fn publication_name(&self, table: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("medallion_{}", table.to_ascii_lowercase()))
    }

    /// The format given, or the one the path's extension implies.
    pub fn resolved_format(&self) -> std::result::Result<Format, String> {
        if let Some(f) = self.format {
            return Ok(f);
        }
        let lower = crate::storage::file_part(&self.path).to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Ok(Format::Parquet)
        } else if lower.ends_with(".csv") {
            Ok(Format::Csv)
        } else if lower.ends_with(".ndjson")
            || lower.ends_with(".jsonl")
            || lower.ends_with(".json")
        {
            Ok(Format::Ndjson)
        } else {
            Err(format!(
                "cannot tell the format of `{}`; add format = \"parquet\" | \"csv\" | \"ndjson\"",
                self.path
            ))
        }
    }

    /// The declared schema, if any, as Arrow fields (all nullable: raw data has holes).
    pub fn declared_schema(&self) -> std::result::Result<Option<Schema>, String> {
        let Some(types) = &self.schema else {
            return Ok(None);
        };
        let order: Vec<String> = match &self.columns {
            Some(cols) => {
                for c in cols {
                    if !types.contains_key(c) {
                        return Err(format!("column `{c}` is in `columns` but not in `schema`"));
                    }
                }
                cols.clone()
            }
            None => types.keys().cloned().collect(),
        };
        let fields = order
            .iter()
            .map(|c| {
                let ty = &types[c];
                let dt: DataType = parse_type_name(ty)
                    .ok_or_else(|| format!("column `{c}` has unknown type `{ty}`"))?;
                Ok(Field::new(c, dt, true))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(Some(Schema::new(fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_names_across_layers_are_an_error() {
        let err = PipelineSpec::from_toml(
            r#"
            [bronze.orders]
            path = "o.csv"
            [silver.orders]
            sql = "select 1"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`orders` is defined both in [bronze] and in [silver]"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = PipelineSpec::from_toml(
            r#"
            [silver.x]
            sql = "select 1"
            dedup = { key = ["a"], order_by = "b" }
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dedup"), "{err}");
    }

    #[test]
    fn postgres_sources_are_checked() {
        let ok = PipelineSpec::from_toml(
            r#"
            [sources.shop]
            kind = "postgres"
            url = "env:SHOP_DATABASE_URL"
            [bronze.orders_raw]
            source = "shop"
            table = "public.orders"
            mode = "incremental"
            watermark = "updated_at"
            "#,
        )
        .unwrap();
        assert!(ok.bronze["orders_raw"].is_extracted());
        for (body, needle) in [
            (
                "source = \"nope\"\ntable = \"t\"",
                "source `nope` is not defined",
            ),
            ("source = \"shop\"", "give the `table`"),
            (
                "source = \"shop\"\ntable = \"t\"\nquery = \"select 1\"",
                "not both",
            ),
            (
                "source = \"shop\"\ntable = \"t\"\nmode = \"incremental\"",
                "needs `watermark`",
            ),
            ("path = \"a.csv\"\ntable = \"t\"", "`table` needs `source`"),
        ] {
            let err = PipelineSpec::from_toml(&format!(
                "[sources.shop]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\n[bronze.t]\n{body}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://shop:s3cret@db:5432/shop?sslmode=disable"),
            "postgres://shop:***@db:5432/shop?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://db/shop?user=a&password=s3cret"),
            "postgresql://db/shop?user=a&password=***"
        );
        assert_eq!(redact_url("postgres://a@b/c"), "postgres://a@b/c");
        assert_eq!(redact_url("host=db password=x"), "host=db password=***");
    }

    #[test]
    fn format_comes_from_the_extension() {
        let spec = PipelineSpec::from_toml(
            r#"
            [bronze.a]
            path = "data/*.ndjson"
            [bronze.b]
            path = "x.parquet"
            [bronze.c]
            path = "https://h/raw/orders.csv?X-Amz-Signature=ab12&v=2.json"
            "#,
        )
        .unwrap();
        assert_eq!(spec.bronze["a"].resolved_format(), Ok(Format::Ndjson));
        assert_eq!(spec.bronze["b"].resolved_format(), Ok(Format::Parquet));
        // A URL's query (a presigned URL's signature) is not part of the file's name.
        assert_eq!(spec.bronze["c"].resolved_format(), Ok(Format::Csv));
    }
}
