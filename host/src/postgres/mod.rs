//! PostgreSQL sources: extracts a table or query into a bronze table, snapshot or incremental.
//!
//! The host does the network I/O and the core does the writing: rows are fetched through a
//! portal, [`FETCH_ROWS`] at a time, in PostgreSQL's binary format, decoded straight into
//! Arrow arrays (no intermediate Rust values) and handed to
//! [`medallion_core::extract::BronzeExtract`], which writes them to Parquet as they come and
//! commits them in one Delta version. The whole extract reads one consistent snapshot of the
//! database (a `REPEATABLE READ READ ONLY` transaction).
//!
//! Incremental: the greatest watermark value is read first, in the same transaction, then the
//! rows with `watermark > last recorded` (and `<= that greatest value`) are extracted; the new
//! greatest value is committed with the rows. Values travel as parameters in their text form,
//! cast by the server to the column's own type, never spliced into the SQL. Rows whose
//! watermark is NULL, or that commit later with a watermark below the recorded one, are not
//! picked up: that is the contract of watermark extraction (CDC has no such gap).
//!
//! Types: bool, int2/4/8, float4/8, numeric(p,s) → decimal(p,s) (p ≤ 38), text, varchar,
//! char, name, json, jsonb, uuid (→ string), bytea, date, time, timestamp, timestamptz (UTC),
//! text[]/varchar[] (→ list<string>). Anything else, and numeric without a precision, is an
//! error naming the column that suggests a cast in `query`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use medallion_core::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use medallion_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use medallion_core::clock::Clock;
use medallion_core::extract::{last_watermark, BronzeExtract, ExtractReport, Mark, Watermark};
use medallion_core::pipeline::RunOptions;
use medallion_core::spec::{
    redact_url, BronzeSource, ExtractMode, PipelineSpec, Source, SourceKind,
};
use medallion_core::storage::Storage;
use postgres_protocol::types as wire;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Column, Config, NoTls, Row, Transaction};

pub mod cdc;

/// Rows fetched from the portal per round trip, and per Arrow batch.
pub const FETCH_ROWS: i32 = 10_000;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// What can go wrong extracting from PostgreSQL; each names the source, table or column.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("source `{source_name}`: {message}")]
    Url {
        source_name: String,
        message: String,
    },
    #[error("source `{source_name}`: cannot reach PostgreSQL at {target}: {message}")]
    Unreachable {
        source_name: String,
        target: String,
        message: String,
    },
    #[error("source `{source_name}`: PostgreSQL at {target} refused the login of user `{user}`: {message} (check the password in the source's URL; it is not shown)")]
    Auth {
        source_name: String,
        target: String,
        user: String,
        message: String,
    },
    #[error("bronze table `{table}`: source `{source_name}` has no table `{relation}` (or this user may not see it)")]
    MissingTable {
        table: String,
        source_name: String,
        relation: String,
    },
    #[error("bronze table `{table}`: column `{column}` of {relation}: {message}")]
    Column {
        table: String,
        relation: String,
        column: String,
        message: String,
    },
    #[error("bronze table `{table}`: {what} on source `{source_name}`: {message}")]
    Query {
        table: String,
        source_name: String,
        what: String,
        message: String,
    },
    #[error("bronze table `{table}`: change data capture from source `{source_name}`: {message}")]
    Cdc {
        table: String,
        source_name: String,
        message: String,
    },
    #[error(transparent)]
    Core(#[from] medallion_core::Error),
}

/// The bronze tables of `spec` extracted from database sources, in name order.
pub fn extracted_tables(spec: &PipelineSpec) -> Vec<String> {
    spec.bronze
        .iter()
        .filter(|(_, s)| s.is_extracted())
        .map(|(n, _)| n.clone())
        .collect()
}

/// Extracts bronze table `name` of `spec` from its source into the lake of `opts`: one commit
/// (none for an incremental extract that finds no new rows).
pub async fn extract_table(
    spec: &PipelineSpec,
    name: &str,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
) -> Result<ExtractReport, PgError> {
    let (src, source_name, source) = source_of(spec, name)?;
    match source.kind {
        SourceKind::Postgres => {}
    }
    if src.mode == Some(ExtractMode::Cdc) {
        let options = cdc::CdcOptions::default();
        return cdc::extract_cdc(spec, name, storage, clock, opts, &options, &mut |_| {}).await;
    }
    let mut client = connect(&source_name, &source.url).await?;
    let ctx = Ctx {
        table: name.to_string(),
        source_name: source_name.clone(),
        relation: match (&src.table, &src.query) {
            (Some(t), _) => t.clone(),
            _ => "the query".to_string(),
        },
    };
    let tx = read_only_transaction(&mut client, &ctx).await?;

    let base_sql = match (&src.table, &src.query) {
        (Some(t), _) => {
            let found: Option<String> = tx
                .query_one("SELECT to_regclass($1)::text", &[t])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| ctx.query("looking up the table", &e))?;
            if found.is_none() {
                return Err(PgError::MissingTable {
                    table: name.to_string(),
                    source_name,
                    relation: t.clone(),
                });
            }
            format!("SELECT * FROM {}", quote_relation(t))
        }
        (None, Some(q)) => format!(
            "SELECT * FROM ({}) AS medallion_src",
            q.trim().trim_end_matches(';')
        ),
        (None, None) => {
            return Err(medallion_core::Error::Spec(format!(
                "bronze table `{name}`: give `table` or `query`"
            ))
            .into())
        }
    };
    let (described, columns, schema) = describe_rows(&tx, &ctx, &base_sql).await?;

    let mode = src.mode.unwrap_or_default();
    let (sql, params, watermark) = match (mode, &src.watermark) {
        (ExtractMode::Incremental, Some(column)) => {
            let last = last_watermark(storage.as_ref(), spec, &opts.lake, name).await?;
            let col = described
                .columns()
                .iter()
                .find(|c| c.name() == column)
                .ok_or_else(|| PgError::Column {
                    table: name.to_string(),
                    relation: ctx.relation.clone(),
                    column: column.clone(),
                    message: "the watermark column is not among the extracted columns".into(),
                })?;
            let type_name: String = tx
                .query_one("SELECT format_type($1::oid, NULL)", &[&col.type_().oid()])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| ctx.query("naming the watermark's type", &e))?;
            let wm = quote_ident(column);
            let cast = |n: usize| format!("CAST(${n}::text AS {type_name})");
            let (filter, mut params) = match &last {
                Some(w) => (format!(" WHERE {wm} > {}", cast(1)), vec![w.value.clone()]),
                None => (String::new(), vec![]),
            };
            let max_sql =
                format!("SELECT max({wm})::text FROM ({base_sql}) AS medallion_wm{filter}");
            let max: Option<String> = tx
                .query_one(&max_sql, &sql_params(&params))
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| ctx.query("reading the greatest watermark", &e))?;
            match max {
                // No rows past the recorded watermark: nothing is committed (or, on a first
                // run, an empty table is created).
                None => (
                    format!("SELECT * FROM ({base_sql}) AS medallion_rows WHERE false"),
                    vec![],
                    last,
                ),
                Some(max) => {
                    let upper = cast(params.len() + 1);
                    let sql = match last {
                        Some(_) => format!(
                            "SELECT * FROM ({base_sql}) AS medallion_rows{filter} AND {wm} <= {upper}"
                        ),
                        None => format!(
                            "SELECT * FROM ({base_sql}) AS medallion_rows WHERE {wm} <= {upper}"
                        ),
                    };
                    params.push(max.clone());
                    let watermark = Watermark {
                        column: column.clone(),
                        value: max,
                    };
                    (sql, params, Some(watermark))
                }
            }
        }
        _ => (base_sql, vec![], None),
    };

    let mut extract = BronzeExtract::begin(
        spec,
        name,
        storage,
        clock,
        opts,
        schema.clone(),
        watermark.map_or(Mark::None, Mark::Watermark),
    )
    .await?;
    let streamed = stream_rows(&tx, &ctx, &sql, &params, &columns, &schema, &mut extract).await;
    if let Err(e) = streamed {
        extract.abort().await;
        return Err(e);
    }
    // The snapshot is read; the transaction only read, so how it ends changes nothing.
    let _ = tx.commit().await;
    Ok(extract.finish().await?)
}

/// Bronze table `name` of `spec`, the name of its database source, and the source.
fn source_of<'a>(
    spec: &'a PipelineSpec,
    name: &str,
) -> Result<(&'a BronzeSource, String, &'a Source), PgError> {
    let src = spec
        .bronze
        .get(name)
        .ok_or_else(|| medallion_core::Error::Spec(format!("no bronze table `{name}`")))?;
    let source_name = src.source.clone().unwrap_or_default();
    let source = spec.sources.get(&source_name).ok_or_else(|| {
        medallion_core::Error::Spec(format!(
            "bronze table `{name}`: source `{source_name}` is not defined"
        ))
    })?;
    Ok((src, source_name, source))
}

/// A `REPEATABLE READ READ ONLY` transaction: every read of an extract sees one snapshot.
async fn read_only_transaction<'c>(
    client: &'c mut Client,
    ctx: &Ctx,
) -> Result<Transaction<'c>, PgError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| ctx.query("starting a transaction", &e))
}

/// The columns `sql` returns, how each decodes, and the Arrow schema of its rows.
async fn describe_rows(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    sql: &str,
) -> Result<(tokio_postgres::Statement, Vec<PgColumn>, SchemaRef), PgError> {
    let described = tx
        .prepare(sql)
        .await
        .map_err(|e| ctx.query("describing the rows", &e))?;
    let columns: Vec<PgColumn> = described
        .columns()
        .iter()
        .map(|c| PgColumn::new(ctx, c))
        .collect::<Result<_, _>>()?;
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    Ok((described, columns, schema))
}

/// Runs `sql` through a portal and pushes its rows, batch by batch.
async fn stream_rows(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    sql: &str,
    params: &[String],
    columns: &[PgColumn],
    schema: &SchemaRef,
    extract: &mut BronzeExtract,
) -> Result<(), PgError> {
    let statement = tx
        .prepare(sql)
        .await
        .map_err(|e| ctx.query("preparing the extract", &e))?;
    let portal = tx
        .bind(&statement, &sql_params(params))
        .await
        .map_err(|e| ctx.query("starting the extract", &e))?;
    loop {
        let rows = tx
            .query_portal(&portal, FETCH_ROWS)
            .await
            .map_err(|e| ctx.query("fetching rows", &e))?;
        if rows.is_empty() {
            return Ok(());
        }
        let batch = decode_batch(ctx, columns, schema, &rows)?;
        extract.push(batch).await?;
        if rows.len() < FETCH_ROWS as usize {
            return Ok(());
        }
    }
}

/// Text parameters as tokio-postgres takes them.
fn sql_params(params: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Names for messages.
struct Ctx {
    table: String,
    source_name: String,
    relation: String,
}

impl Ctx {
    fn query(&self, what: &str, e: &tokio_postgres::Error) -> PgError {
        PgError::Query {
            table: self.table.clone(),
            source_name: self.source_name.clone(),
            what: what.to_string(),
            message: describe(e),
        }
    }

    fn column(&self, column: &str, message: String) -> PgError {
        PgError::Column {
            table: self.table.clone(),
            relation: self.relation.clone(),
            column: column.to_string(),
            message,
        }
    }
}

/// The server's message (with its detail and hint), or the client's.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                m.push_str(&format!(": {c}"));
                cause = c.source();
            }
            m
        }
    }
}

/// Opens a connection (no TLS) and drives it on the runtime. `url` is a postgres:// URL, a
/// key=value string, or `env:NAME`.
pub async fn connect(source_name: &str, url: &str) -> Result<Client, PgError> {
    let config = parse_config(source_name, url)?;
    let target = targets(&config);
    let user = config.get_user().unwrap_or_default().to_string();
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let login_refused = e.code().is_some_and(|c| {
            *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        });
        if login_refused {
            PgError::Auth {
                source_name: source_name.to_string(),
                target: target.clone(),
                user: user.clone(),
                message: describe(&e),
            }
        } else {
            PgError::Unreachable {
                source_name: source_name.to_string(),
                target: target.clone(),
                message: describe(&e),
            }
        }
    })?;
    tokio::spawn(async move {
        // Errors surface on the client's next request; nothing to report here.
        let _ = connection.await;
    });
    Ok(client)
}

/// The connection settings of a source's `url` (a postgres:// URL, key=value, or `env:NAME`).
fn parse_config(source_name: &str, url: &str) -> Result<Config, PgError> {
    let url_error = |message: String| PgError::Url {
        source_name: source_name.to_string(),
        message,
    };
    let url = match url.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| {
            url_error(format!(
                "the environment variable {var} (the source's url) is not set"
            ))
        })?,
        None => url.to_string(),
    };
    let mut config = Config::from_str(&url).map_err(|e| {
        url_error(format!(
            "`{}` is not a PostgreSQL connection URL: {e}",
            redact_url(&url)
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

/// `host:port` of each host the config names, for messages.
fn targets(config: &Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `schema.table` as quoted identifiers; parts already quoted are kept.
fn quote_relation(name: &str) -> String {
    if name.contains('"') {
        return name.to_string();
    }
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How one column's values are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal { precision: u8, scale: i8 },
    Text,
    Jsonb,
    Uuid,
    Bytea,
    Date,
    Time,
    Timestamp { utc: bool },
    TextArray,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Kind::Text | Kind::Jsonb | Kind::Uuid => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| Arc::from("UTC")))
            }
            Kind::TextArray => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }
}

struct PgColumn {
    name: String,
    kind: Kind,
}

impl PgColumn {
    fn new(ctx: &Ctx, c: &Column) -> Result<Self, PgError> {
        Ok(PgColumn {
            name: c.name().to_string(),
            kind: Kind::of(c.type_().oid(), c.type_modifier(), c.name())
                .map_err(|m| ctx.column(c.name(), m))?,
        })
    }
}

impl Kind {
    /// How values of PostgreSQL type `oid` with modifier `typmod` decode; the error says why
    /// a type has no mapping (the caller names the column).
    fn of(oid: u32, typmod: i32, column: &str) -> Result<Kind, String> {
        let col = quote_ident(column);
        let Some(ty) = Type::from_oid(oid) else {
            return Err(format!(
                "PostgreSQL type oid {oid} (a user-defined type) has no Arrow mapping; extract it through `query` with a cast, e.g. `{col}::text`"
            ));
        };
        Ok(match ty {
            Type::BOOL => Kind::Bool,
            Type::INT2 => Kind::Int16,
            Type::INT4 => Kind::Int32,
            Type::INT8 => Kind::Int64,
            Type::FLOAT4 => Kind::Float32,
            Type::FLOAT8 => Kind::Float64,
            Type::NUMERIC => numeric_kind(typmod, &col)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => Kind::Text,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::BYTEA => Kind::Bytea,
            Type::DATE => Kind::Date,
            Type::TIME => Kind::Time,
            Type::TIMESTAMP => Kind::Timestamp { utc: false },
            Type::TIMESTAMPTZ => Kind::Timestamp { utc: true },
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => Kind::TextArray,
            _ => {
                return Err(format!(
                    "PostgreSQL type `{}` has no Arrow mapping; extract it through `query` with a cast, e.g. `{col}::text`",
                    ty.name(),
                ))
            }
        })
    }
}

/// numeric(p,s) → decimal(p,s); the type modifier is `((p << 16) | s) + 4`, -1 if absent.
fn numeric_kind(typmod: i32, col: &str) -> Result<Kind, String> {
    let cast_hint = format!(
        "extract it through `query` with a cast, e.g. `{col}::numeric(38,10)` (or `::float8`, `::text`)"
    );
    if typmod < 4 {
        return Err(format!(
            "numeric without a precision and scale has no exact Arrow decimal type; {cast_hint}"
        ));
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    // The scale is an 11-bit signed number since PostgreSQL 15.
    let raw_scale = (typmod - 4) & 0x7ff;
    let scale = if raw_scale > 1023 {
        raw_scale - 2048
    } else {
        raw_scale
    };
    if !(1..=38).contains(&precision) || !(0..=precision).contains(&scale) {
        return Err(format!(
            "numeric({precision},{scale}) does not fit a 128-bit decimal (precision 1 to 38, scale 0 to the precision); {cast_hint}"
        ));
    }
    Ok(Kind::Decimal {
        precision: precision as u8,
        scale: scale as i8,
    })
}

/// A value's bytes as the server sent them (binary format), for any type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

type DecodeResult<T> = Result<T, Box<dyn std::error::Error + Sync + Send>>;

/// Decodes fetched rows into one Arrow batch of `schema`.
fn decode_batch(
    ctx: &Ctx,
    columns: &[PgColumn],
    schema: &SchemaRef,
    rows: &[Row],
) -> Result<RecordBatch, PgError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, col) in columns.iter().enumerate() {
        let values = rows.iter().map(|r| {
            r.try_get::<_, Option<Raw>>(i)
                .map(|v| v.map(|raw| raw.0))
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Sync + Send>)
        });
        let array = decode_column(col.kind, rows.len(), values)
            .map_err(|e| ctx.column(&col.name, format!("a value could not be decoded: {e}")))?;
        arrays.push(array);
    }
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| {
        PgError::Core(medallion_core::Error::Table {
            table: ctx.table.clone(),
            message: format!("assembling a batch: {e}"),
        })
    })
}

fn decode_column<'a>(
    kind: Kind,
    n: usize,
    values: impl Iterator<Item = DecodeResult<Option<&'a [u8]>>>,
) -> DecodeResult<ArrayRef> {
    fn fill<'a, B: ArrayBuilder, T>(
        mut builder: B,
        values: impl Iterator<Item = DecodeResult<Option<&'a [u8]>>>,
        decode: impl Fn(&'a [u8]) -> DecodeResult<T>,
        append: impl Fn(&mut B, Option<T>),
    ) -> DecodeResult<ArrayRef> {
        for v in values {
            let v = match v? {
                Some(raw) => Some(decode(raw)?),
                None => None,
            };
            append(&mut builder, v);
        }
        Ok(Arc::new(builder.finish()))
    }
    Ok(match kind {
        Kind::Bool => fill(
            BooleanBuilder::with_capacity(n),
            values,
            wire::bool_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Int16 => fill(
            Int16Builder::with_capacity(n),
            values,
            wire::int2_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Int32 => fill(
            Int32Builder::with_capacity(n),
            values,
            wire::int4_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Int64 => fill(
            Int64Builder::with_capacity(n),
            values,
            wire::int8_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Float32 => fill(
            Float32Builder::with_capacity(n),
            values,
            wire::float4_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Float64 => fill(
            Float64Builder::with_capacity(n),
            values,
            wire::float8_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Decimal { precision, scale } => fill(
            Decimal128Builder::with_capacity(n).with_precision_and_scale(precision, scale)?,
            values,
            |raw| numeric_to_i128(raw, scale, precision),
            |b, v| b.append_option(v),
        )?,
        Kind::Text => fill(
            StringBuilder::with_capacity(n, n * 16),
            values,
            wire::text_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Jsonb => fill(
            StringBuilder::with_capacity(n, n * 32),
            values,
            |raw| match raw.split_first() {
                Some((1, text)) => Ok(std::str::from_utf8(text)?),
                _ => Err("unknown jsonb binary version".into()),
            },
            |b, v| b.append_option(v),
        )?,
        Kind::Uuid => fill(
            StringBuilder::with_capacity(n, n * 36),
            values,
            |raw| wire::uuid_from_sql(raw).map(format_uuid),
            |b, v| b.append_option(v),
        )?,
        Kind::Bytea => fill(
            BinaryBuilder::with_capacity(n, n * 16),
            values,
            |raw| Ok(wire::bytea_from_sql(raw)),
            |b, v| b.append_option(v),
        )?,
        Kind::Date => fill(
            Date32Builder::with_capacity(n),
            values,
            |raw| {
                let days = wire::date_from_sql(raw)?;
                if days == i32::MAX || days == i32::MIN {
                    return Err("date 'infinity' has no Arrow value".into());
                }
                days.checked_add(PG_EPOCH_DAYS)
                    .ok_or_else(|| "date out of range".into())
            },
            |b, v| b.append_option(v),
        )?,
        Kind::Time => fill(
            Time64MicrosecondBuilder::with_capacity(n),
            values,
            wire::time_from_sql,
            |b, v| b.append_option(v),
        )?,
        Kind::Timestamp { utc } => {
            let builder = TimestampMicrosecondBuilder::with_capacity(n);
            let builder = match utc {
                true => builder.with_timezone("UTC"),
                false => builder,
            };
            fill(
                builder,
                values,
                |raw| {
                    let us = wire::timestamp_from_sql(raw)?;
                    if us == i64::MAX || us == i64::MIN {
                        return Err("timestamp 'infinity' has no Arrow value".into());
                    }
                    us.checked_add(PG_EPOCH_US)
                        .ok_or_else(|| "timestamp out of range".into())
                },
                |b, v| b.append_option(v),
            )?
        }
        Kind::TextArray => {
            let mut builder = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v? {
                    None => builder.append_null(),
                    Some(raw) => {
                        let array = wire::array_from_sql(raw)?;
                        if array.dimensions().count()? > 1 {
                            return Err("multi-dimensional arrays have no Arrow mapping".into());
                        }
                        let mut items = array.values();
                        while let Some(item) = items.next()? {
                            match item {
                                Some(text) => {
                                    builder.values().append_value(wire::text_from_sql(text)?)
                                }
                                None => builder.values().append_null(),
                            }
                        }
                        builder.append(true);
                    }
                }
            }
            Arc::new(builder.finish())
        }
    })
}

fn format_uuid(b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A binary `numeric` as the unscaled integer of a decimal with `scale` (exact, or an error).
/// The format: ndigits, weight, sign, dscale (i16/u16 each), then ndigits base-10000 digits;
/// the value is Σ digit[i] · 10000^(weight − i).
fn numeric_to_i128(raw: &[u8], scale: i8, precision: u8) -> DecodeResult<i128> {
    let word = |i: usize| -> DecodeResult<u16> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN has no decimal value".into()),
        _ => return Err("infinity has no decimal value".into()),
    }
    let overflow = || -> Box<dyn std::error::Error + Sync + Send> {
        format!("value does not fit decimal({precision},{scale})").into()
    };
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let d = word(4 + i)? as i128;
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(d))
            .ok_or_else(overflow)?;
    }
    // acc = value · 10000^(ndigits − 1 − weight); we want value · 10^scale.
    let exp = scale as i64 - 4 * (ndigits as i64 - 1 - weight);
    if exp >= 0 {
        let factor = 10i128.checked_pow(exp as u32).ok_or_else(overflow)?;
        acc = acc.checked_mul(factor).ok_or_else(overflow)?;
    } else {
        let factor = 10i128.checked_pow((-exp) as u32);
        acc = match factor {
            Some(f) if acc % f == 0 => acc / f,
            Some(_) => return Err(format!("value has more than {scale} decimal places").into()),
            None if acc == 0 => 0,
            None => return Err(overflow()),
        };
    }
    if acc >= 10i128.pow(precision as u32) {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary form PostgreSQL sends for a numeric.
    fn numeric(digits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((digits.len() as u16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend(if negative { 0x4000u16 } else { 0 }.to_be_bytes());
        out.extend(dscale.to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.67 = 1|2345|6700 with weight 1
        let raw = numeric(&[1, 2345, 6700], 1, false, 2);
        assert_eq!(numeric_to_i128(&raw, 2, 12).unwrap(), 1_234_567);
        assert_eq!(numeric_to_i128(&raw, 4, 12).unwrap(), 123_456_700);
        assert!(numeric_to_i128(&raw, 1, 12).is_err());
        // -0.05 = 500 with weight -1
        let raw = numeric(&[500], -1, true, 2);
        assert_eq!(numeric_to_i128(&raw, 2, 12).unwrap(), -5);
        // 0: no digits
        assert_eq!(
            numeric_to_i128(&numeric(&[], 0, false, 2), 2, 12).unwrap(),
            0
        );
        // 10^8 = 1 with weight 2
        assert_eq!(
            numeric_to_i128(&numeric(&[1], 2, false, 0), 2, 12).unwrap(),
            10_000_000_000
        );
        assert!(numeric_to_i128(&numeric(&[1], 3, false, 0), 2, 12).is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_relation("public.orders"), "\"public\".\"orders\"");
        assert_eq!(quote_relation("o\"dd"), "o\"dd");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn uuids_print_hyphenated() {
        let b = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
            0xde, 0xf0,
        ];
        assert_eq!(format_uuid(b), "12345678-9abc-def0-1234-56789abcdef0");
    }
}
