//! The command line: argument parsing and one module per subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

mod demo;
mod inspect;
mod output;
mod progress;
mod query;
mod run;

#[derive(Parser, Debug)]
#[command(
    name = "medallion",
    version,
    about = "Run medallion-architecture pipelines (bronze → silver → gold) into Delta Lake tables",
    long_about = "Medallion turns raw files into clean, aggregated Delta Lake tables.\n\n\
        A pipeline spec (TOML) names bronze sources (CSV, NDJSON, Parquet files or globs), silver tables \
        (SQL plus casts, expectations and deduplication) and gold tables (SQL aggregates). \
        `medallion run` builds them in dependency order into a lake folder; a failed run changes no table.\n\n\
        Try it:  medallion demo",
    after_help = "Examples:\n  \
        medallion demo                                   generate retail data, build ./lake, print gold\n  \
        medallion run examples/retail/pipeline.toml --lake ./lake\n  \
        medallion query \"SELECT * FROM sales_by_region_day LIMIT 5\" --lake ./lake\n  \
        medallion query \"SELECT count(*) FROM t\" --table t=data/*.parquet\n  \
        medallion inspect lake/gold/customer_segments/part-00000-*.parquet"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline spec: ingest new source files into bronze, rebuild silver and gold.
    #[command(after_help = "Source paths in the spec are relative to the spec's folder. A second run ingests \
        only source files it has not seen and rebuilds only tables whose inputs changed.\n\
        Exit status is non-zero if any table fails; then no table is changed.")]
    Run {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// The lake folder tables are written to (created if missing).
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Print the run report as JSON on stdout instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run SQL over Parquet files, globs and Delta tables.
    #[command(after_help = "Tables come from --table NAME=LOCATION (a Parquet file, a glob of them, or a Delta \
        table folder; prefix `delta:` to insist on Delta) and from --lake, which registers every table of a lake by name.")]
    Query {
        /// The SQL to run.
        sql: String,
        /// A table to query, as NAME=PATH (repeatable).
        #[arg(long = "table", short = 't', value_name = "NAME=PATH")]
        tables: Vec<String>,
        /// Register every table of this lake (bronze, silver, gold; quarantines as <name>_quarantine).
        #[arg(long)]
        lake: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// At most this many rows are printed in table format (all rows for csv/json).
        #[arg(long, default_value_t = 100)]
        max_rows: usize,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Show the schema, row groups, sizes and statistics of a Parquet file.
    Inspect {
        /// A Parquet file.
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate the retail demo data (if absent), run its pipeline into a lake, print the gold tables.
    Demo {
        /// Where the demo's spec (pipeline.toml) and source data (data/) go.
        #[arg(long, default_value = "retail-demo")]
        dir: PathBuf,
        /// The lake folder.
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Data volume: 1 is about 6k orders and 80k click events per run.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Add one more day of data before running (shows incremental runs).
        #[arg(long)]
        more: bool,
        /// Print the run report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct EngineArgs {
    /// Query partitions (parallelism). Default: the number of CPU cores. 1 is what browsers use.
    #[arg(long)]
    partitions: Option<usize>,
}

impl EngineArgs {
    fn options(self) -> medallion_core::query::EngineOptions {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        medallion_core::query::EngineOptions {
            target_partitions: self.partitions.unwrap_or(cores).max(1),
            ..Default::default()
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { spec, lake, json, engine } => run::run(&spec, &lake, json, engine.options()).await,
        Command::Query { sql, tables, lake, format, max_rows, engine } => {
            query::query(&sql, &tables, lake.as_deref(), format, max_rows, engine.options()).await
        }
        Command::Inspect { path, json } => inspect::inspect(&path, json).await,
        Command::Demo { dir, lake, scale, more, json, engine } => {
            demo::demo(&dir, &lake, scale, more, json, engine.options()).await
        }
    }
}
