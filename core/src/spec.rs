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

/// A raw source landing in a bronze table, appended to on every run with the files not yet seen.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BronzeSource {
    /// A file, a glob (`*`, `**`, `?`, `[ab]`) or an http(s) URL.
    pub path: String,
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
        for (name, src) in &self.bronze {
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
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl BronzeSource {
    /// The format given, or the one the path's extension implies.
    pub fn resolved_format(&self) -> std::result::Result<Format, String> {
        if let Some(f) = self.format {
            return Ok(f);
        }
        let lower = self.path.to_ascii_lowercase();
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
    fn format_comes_from_the_extension() {
        let spec = PipelineSpec::from_toml(
            r#"
            [bronze.a]
            path = "data/*.ndjson"
            [bronze.b]
            path = "x.parquet"
            "#,
        )
        .unwrap();
        assert_eq!(spec.bronze["a"].resolved_format(), Ok(Format::Ndjson));
        assert_eq!(spec.bronze["b"].resolved_format(), Ok(Format::Parquet));
    }
}
