//! The command line: argument parsing and one module per subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns an error instead of panicking when stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod demo;
mod extract;
mod inspect;
mod maintain;
mod output;
mod progress;
mod query;
mod run;
mod watch;

#[derive(Parser, Debug)]
#[command(
    name = "medallion",
    version,
    about = "Run medallion-architecture pipelines (bronze → silver → gold) into Delta Lake tables",
    long_about = "Medallion turns raw files into clean, aggregated Delta Lake tables.\n\n\
        A pipeline spec (TOML) names bronze sources (CSV, NDJSON, Parquet files or globs), silver tables \
        (SQL plus casts, expectations and deduplication) and gold tables (SQL aggregates). \
        `medallion run` builds them in dependency order into a lake folder; a failed run changes no table.\n\n\
        `run` and `query` execute the engine as a sandboxed WebAssembly guest (wasmtime) by default: it reaches only \
        the spec's sources and the lake (or the query's tables), within a memory cap (--max-memory) and an optional \
        time limit (--timeout); independent tables are built in parallel instances. `--engine native` runs the same \
        engine in-process instead.\n\n\
        Try it:  medallion demo",
    after_help = "Examples:\n  \
        medallion demo                                   generate retail data, build ./lake, print gold\n  \
        medallion run examples/retail/pipeline.toml --lake ./lake\n  \
        medallion query \"SELECT * FROM sales_by_region_day LIMIT 5\" --lake ./lake\n  \
        medallion query \"SELECT count(*) FROM t\" --table t=data/*.parquet\n  \
        medallion query \"SELECT * FROM t WHERE id = 42\" --table t=https://example.com/t.parquet --stats\n  \
        medallion query \"SELECT count(*) FROM t\" --table t=lake/gold/customer_segments@3   (time travel)\n  \
        medallion inspect lake/gold/customer_segments          a Delta table's history\n  \
        medallion optimize --lake lake && medallion vacuum --lake lake"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline spec: ingest new source files into bronze, rebuild silver and gold.
    #[command(
        after_help = "Source paths in the spec are relative to the spec's folder. A second run ingests \
        only source files it has not seen and rebuilds only tables whose inputs changed.\n\
        Exit status is non-zero if any table fails; then no table is changed.\n\n\
        With the default --engine guest, each table is built in its own wasm instance (in parallel, --instances at \
        a time, each as soon as the tables it reads are built) that may read only the spec's source files and the lake and write only the \
        lake; every table is committed together at the end. Example:\n  \
        medallion run pipeline.toml --lake lake --max-memory 512MiB --timeout 600\n\n\
        With --watch it keeps running in micro-batches (native engine), with alerts; see --help."
    )]
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
        #[command(flatten)]
        guest: GuestArgs,
        #[command(flatten)]
        watch: watch::WatchArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Pull the spec's PostgreSQL-backed bronze tables into the lake (snapshot, incremental or cdc).
    #[command(
        after_help = "Bronze tables with `source = \"<name>\"` (a [sources.<name>] of kind = \"postgres\") are read         through one consistent snapshot of the database, streamed in batches, and committed to the lake in one         version each. mode = \"snapshot\" replaces the bronze table's rows with the source's; mode = \"incremental\"         appends the rows whose `watermark` column is past the greatest value recorded by the last extract (recorded         in the same commit). mode = \"cdc\" streams the table's changes by logical replication (pgoutput): the first         extract takes a snapshot consistent with a new replication slot (create_slot = true), later ones append every         insert, update and delete (_op, _lsn, _commit_ts) up to the server's position when they started, each batch         committed with the WAL position it reaches, which is reported to PostgreSQL only after the commit: a crash         loses and repeats nothing. --follow keeps streaming until Ctrl-C. `medallion run` extracts them too before         building silver and gold.\n\n        The source's url is a postgres:// URL or env:VARIABLE; its password is never printed. Example:\n          SHOP_DATABASE_URL=postgres://shop:secret@127.0.0.1:5432/shop medallion extract pipeline.toml --lake lake"
    )]
    Extract {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// The lake folder or s3://bucket/prefix tables are written to.
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Extract only this bronze table (repeatable); default: every database-backed one.
        #[arg(long = "table", value_name = "NAME")]
        tables: Vec<String>,
        /// Print the extract reports as JSON on stdout (with --follow, one line per commit).
        #[arg(long)]
        json: bool,
        /// Keep streaming the changes of mode = "cdc" tables until Ctrl-C or SIGTERM (which stop
        /// after committing the whole transactions received).
        #[arg(long)]
        follow: bool,
        /// With --follow: commit the changes received at least this often, e.g. 200ms, 1s.
        #[arg(long, default_value = "200ms", value_parser = watch::parse_duration, value_name = "DURATION", requires = "follow")]
        batch_interval: std::time::Duration,
        /// Commit once this many changes are waiting (at the next transaction's end).
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        max_batch_rows: u64,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run SQL over Parquet files, globs and Delta tables.
    #[command(
        after_help = "Tables come from --table NAME=LOCATION (a Parquet file, a glob of them, or a Delta \
        table folder; prefix `delta:` to insist on Delta) and from --lake, which registers every table of a lake by name.\n\n\
        In the guest (the default engine) a query that scans 10 MiB or more runs on every core: its scans split into \
        --instances parts (default: cores), each in its own instance, finished in one more; --stats says how many. Example:\n  \
        medallion query \"SELECT l_returnflag, count(*) FROM li GROUP BY 1\" --table li=lineitem.parquet --stats"
    )]
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
        /// Print requests, bytes read and time to stderr (as JSON with --format json).
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        guest: GuestArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show a Delta table's history, or a Parquet file's schema, row groups and statistics.
    #[command(
        after_help = "For a Delta table (a folder with _delta_log/): one line per version still in the log — \
        when it was committed, the operation, files and rows added and removed, and stream/CDC progress (txn). \
        Any of these versions can be queried with --table NAME=PATH@VERSION or PATH@2026-11-30T12:00:00Z.\n\
        For a Parquet file: the footer's schema, row groups, column chunk sizes, compression and min/max."
    )]
    Inspect {
        /// A Delta table folder or a Parquet file (local path or http(s) URL).
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Compact a table's small files into large ones, in one commit readers do not notice.
    #[command(
        after_help = "Files smaller than --target-size are merged, partition by partition, into files of about \
        that size; the commit removes the small files and adds the large ones with dataChange=false, so every \
        version reads the same rows and streaming readers see no new data. The small files stay on disk \
        (older versions reference them) until `medallion vacuum` removes them after the retention period.\n\
        Examples:\n  medallion optimize lake/bronze/clicks_raw\n  medallion optimize --lake lake --target-size 64MiB"
    )]
    Optimize {
        /// Tables to compact (Delta table folders).
        tables: Vec<String>,
        /// Compact every table of this lake.
        #[arg(long)]
        lake: Option<String>,
        /// Files smaller than this are compacted into files of about this size.
        #[arg(long, default_value = "128MiB", value_parser = parse_size, value_name = "SIZE")]
        target_size: usize,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// List (dry run, the default) or remove data files no version within the retention references.
    #[command(
        after_help = "A data file is removed only if it is not live in the latest version, was removed from the \
        table more than --retention-hours ago (default: the table's delta.deletedFileRetentionDuration, 7 days), \
        and is itself older than that — so readers of recent versions, time travel within the retention, and \
        writers whose commits are in progress keep their files. Without --apply nothing is deleted.\n\
        Examples:\n  medallion vacuum --lake lake                  list what would be removed\n  \
        medallion vacuum --lake lake --apply\n  \
        medallion vacuum lake/silver/orders --retention-hours 0 --force --apply   (breaks time travel)"
    )]
    Vacuum {
        /// Tables to vacuum (Delta table folders).
        tables: Vec<String>,
        /// Vacuum every table of this lake.
        #[arg(long)]
        lake: Option<String>,
        /// Keep files removed less than this many hours ago (default: the table's retention, 7 days).
        #[arg(long, value_name = "HOURS")]
        retention_hours: Option<f64>,
        /// Allow a retention shorter than the table's own (breaks time travel to older versions).
        #[arg(long)]
        force: bool,
        /// Delete the files (without it, only list them).
        #[arg(long)]
        apply: bool,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Serve the lake to BI tools and SQL clients over the PostgreSQL wire protocol (read-only).
    #[command(
        after_help = "Schemas bronze, silver, gold and quarantine hold the lake's Delta tables; every query \
        reads each table at its latest committed version, so a pipeline's commit is visible to the next query \
        and never half of it. Writes and DDL are refused (SQLSTATE 25006). Tables a pipeline creates appear \
        within 2 s.\n\n\
        On 127.0.0.1 (the default) no password is asked. Any other --bind needs a password, which clients give \
        as user `medallion` (SCRAM-SHA-256): --password-file FILE or the MEDALLION_SERVE_PASSWORD variable; \
        add --tls-cert/--tls-key to encrypt (the HTTP port then serves HTTPS with the same certificate).\n\n\
        HTTP on --http-port (8080; 0 turns it off): the dashboard at /, the lake's files read-only at /lake/ \
        (GET and HEAD with byte ranges, for the npm package and other HTTP readers), and with --run PIPELINE.toml \
        --watch the pipeline runs in this process: its last batch report at /api/report and its alerts as \
        Server-Sent Events at /api/alerts. With a password, HTTP asks for it too (Basic, user `medallion`).\n\n\
        Examples:\n  \
        medallion serve --lake lake\n  \
        psql -h 127.0.0.1 -p 5433 -c 'SELECT * FROM gold.sales_by_region_day LIMIT 5'\n  \
        JDBC: jdbc:postgresql://127.0.0.1:5433/lake   (DBeaver, Metabase, Tableau: PostgreSQL, port 5433)\n  \
        medallion serve --lake lake --run pipeline.toml --watch   then open http://127.0.0.1:8080/?live"
    )]
    Serve {
        /// The lake to serve (a folder or s3://bucket/prefix).
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Address to listen on. Anything but loopback needs a password.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Port of the PostgreSQL protocol.
        #[arg(long, default_value_t = 5433)]
        pg_port: u16,
        /// Port of the HTTP side (dashboard, lake files, report, alerts); 0 turns it off.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// The dashboard's folder; the npm package is served from ../wasm beside it, as its
        /// import map expects. Default: web/ of the checkout this binary was built from.
        #[arg(long, value_name = "DIR")]
        web: Option<PathBuf>,
        /// Run this pipeline into the lake in this process (with --watch, in micro-batches):
        /// its report and alerts are served over HTTP.
        #[arg(long, value_name = "PIPELINE.toml", requires = "watch")]
        run: Option<PathBuf>,
        #[command(flatten)]
        watch: watch::WatchArgs,
        /// A file whose first line is the password clients must give (as user `medallion`).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// TLS certificate (PEM); with --tls-key, PostgreSQL connections may be encrypted and
        /// the HTTP port serves HTTPS only.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<String>,
        /// TLS private key (PKCS#8 PEM).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<String>,
        /// Connections served at once; more are turned away.
        #[arg(long, default_value_t = 100)]
        max_connections: usize,
        /// Memory all running queries may hold together (sorts, joins, aggregates), e.g. 2GiB.
        #[arg(long, default_value = "2GiB", value_parser = parse_size, value_name = "SIZE")]
        max_memory: usize,
        /// How long one query may run, e.g. 30s, 5m, 1500ms; 0 turns the limit off. A query
        /// still running then is stopped (its work and memory released) and its client gets
        /// SQLSTATE 57014 (query_canceled); the connection stays open. A client may ask for less
        /// with `SET statement_timeout`, never for more.
        #[arg(long, default_value = "5m", value_parser = watch::parse_duration, value_name = "DURATION")]
        query_timeout: std::time::Duration,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run a DataFusion Ballista scheduler or executor for `run`/`query --cluster`.
    #[cfg(feature = "cluster")]
    #[command(
        after_help = "One binary, three roles: a scheduler, executors that register with it, and `medallion run` or \
        `medallion query` with --cluster df://HOST:PORT, which plan here, run the SQL on the executors and (for run) \
        write the data files and commit the Delta log here. Executors read the lake where they run (local paths, \
        http(s)://, s3:// with credentials from their environment). Example on one machine:\n  \
        medallion cluster scheduler --port 50050 &\n  \
        medallion cluster executor --scheduler 127.0.0.1:50050 --port 50051 &\n  \
        medallion cluster executor --scheduler 127.0.0.1:50050 --port 50061 &\n  \
        medallion run pipeline.toml --lake lake --cluster df://127.0.0.1:50050\n\n\
        MEDALLION_LOG=info shows Ballista's log lines (default: warnings)."
    )]
    Cluster {
        #[command(subcommand)]
        role: ClusterRole,
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
        /// Then serve the lake over the PostgreSQL protocol on 127.0.0.1 (see `medallion serve`).
        #[arg(long)]
        serve: bool,
        /// With --serve: the PostgreSQL protocol's port.
        #[arg(long, default_value_t = 5433, requires = "serve")]
        pg_port: u16,
        /// With --serve: the HTTP port of the dashboard (0: none).
        #[arg(long, default_value_t = 8080, requires = "serve")]
        http_port: u16,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        guest: GuestArgs,
    },
}

/// `--cluster df://HOST:PORT` of `run` and `query` (builds with the `cluster` feature).
#[derive(clap::Args, Debug, Clone, Default)]
struct ClusterArgs {
    /// Run the SQL on this DataFusion Ballista cluster (see `medallion cluster`); this process
    /// plans, writes the data files and commits.
    #[cfg(feature = "cluster")]
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

impl ClusterArgs {
    fn url(&self) -> Option<&str> {
        #[cfg(feature = "cluster")]
        return self.cluster.as_deref();
        #[cfg(not(feature = "cluster"))]
        return None;
    }
}

/// `medallion cluster …`: the server roles of a Ballista cluster.
#[cfg(feature = "cluster")]
#[derive(Subcommand, Debug)]
enum ClusterRole {
    /// Run a Ballista scheduler: it plans jobs and hands their tasks to executors.
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Port of the scheduler (clients use df://HOST:PORT, executors --scheduler HOST:PORT).
        #[arg(long, default_value_t = 50050)]
        port: u16,
        /// Seconds without a heartbeat after which an executor is dropped and its tasks rerun.
        #[arg(long, default_value_t = 20, value_name = "SECONDS")]
        executor_timeout: u64,
    },
    /// Run a Ballista executor: it runs tasks and serves their results (Arrow Flight).
    Executor {
        /// The scheduler, as HOST:PORT (or df://HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        /// Address to listen on (and to advertise to the scheduler and other executors).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Arrow Flight port (results, shuffles).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Port for tasks from the scheduler. Default: --port + 1.
        #[arg(long)]
        grpc_port: Option<u16>,
        /// Folder for shuffle files and spills. Default: a temporary folder.
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Tasks run at once. Default: the number of CPU cores.
        #[arg(long, value_name = "N")]
        concurrent_tasks: Option<usize>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = 5, value_name = "SECONDS")]
        heartbeat: u64,
    },
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct EngineArgs {
    /// Query partitions (parallelism). Default: the number of CPU cores. 1 is what browsers use.
    #[arg(long)]
    partitions: Option<usize>,
    /// Memory that sorts, joins and aggregates may hold at once, e.g. 256MiB (default: no
    /// limit). Past their share they spill to the temporary folder (TMPDIR); tables stream to
    /// data files of at most 1/8 of it. What cannot spill fails naming the table. In the guest
    /// the limit is also at most half of --max-memory, and nothing spills. (`serve` uses
    /// --max-memory.)
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    memory_limit: Option<usize>,
    /// Remote Parquet: bytes of the first footer read, from the end of each file.
    #[arg(long, default_value_t = 512 * 1024, value_name = "BYTES", help_heading = "Remote reads")]
    footer_hint: u64,
    /// Remote Parquet: byte ranges closer than this are fetched in one request.
    #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES", help_heading = "Remote reads")]
    coalesce_gap: u64,
    /// Remote Parquet: requests in flight at once per file.
    #[arg(
        long,
        default_value_t = 6,
        value_name = "N",
        help_heading = "Remote reads"
    )]
    max_in_flight: usize,
    /// HTTP: seconds one request may take before it fails.
    #[arg(
        long,
        default_value_t = 30,
        value_name = "SECONDS",
        help_heading = "Remote reads"
    )]
    http_timeout: u64,
    /// HTTP: retries of a failed request (5xx, dropped connection, truncated body).
    #[arg(
        long,
        default_value_t = 3,
        value_name = "N",
        help_heading = "Remote reads"
    )]
    http_retries: u32,
}

impl EngineArgs {
    fn options(self) -> medallion_core::query::EngineOptions {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        medallion_core::query::EngineOptions {
            target_partitions: self.partitions.unwrap_or(cores).max(1),
            reading: medallion_core::bridge::parquet_reader::ReadSettings {
                footer_hint: self.footer_hint,
                coalesce_gap: self.coalesce_gap,
                max_in_flight: self.max_in_flight.max(1),
                ..Default::default()
            },
            memory_limit: self.memory_limit,
            ..Default::default()
        }
    }

    /// Local files and http(s) URLs, with request counting.
    fn storage(self) -> anyhow::Result<std::sync::Arc<medallion_core::storage::CountingStorage>> {
        let http = medallion_host::http::HttpSettings {
            timeout: std::time::Duration::from_secs(self.http_timeout.max(1)),
            retries: self.http_retries,
            ..Default::default()
        };
        let native = medallion_host::native_storage::NativeStorage::new(http);
        Ok(std::sync::Arc::new(
            medallion_core::storage::CountingStorage::new(std::sync::Arc::new(native)),
        ))
    }
}

/// Where the core runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// In a sandboxed WebAssembly guest (wasmtime): only the spec's sources and the lake (or
    /// the query's tables) are reachable; memory and time are capped.
    Guest,
    /// In this process, with DataFusion's native multi-threaded execution.
    Native,
}

#[derive(clap::Args, Debug, Clone, Copy)]
#[command(next_help_heading = "Sandbox")]
struct GuestArgs {
    /// Run the core as a sandboxed wasm guest (default) or natively in this process.
    #[arg(long, value_enum, default_value_t = Engine::Guest)]
    engine: Engine,
    /// Guest: memory cap of each instance, e.g. 512MiB, 2GiB.
    #[arg(long, default_value = "2GiB", value_parser = parse_size, value_name = "SIZE")]
    max_memory: usize,
    /// Guest: stop the job after this many seconds (fractions allowed); no limit if absent.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Guest: instances at once. A run builds that many tables in parallel, each in its own
    /// instance; a query splits its scans into that many parts, each in its own instance, and
    /// finishes in one more (1: the whole query in one). Default: the number of CPU cores.
    #[arg(long, value_name = "N")]
    instances: Option<usize>,
}

impl GuestArgs {
    /// The engine settings of a guest instance: one partition (it has no threads to run more
    /// on), and queries held to half of its memory, the rest being for the files it reads and
    /// writes; there is no disk to spill to.
    fn engine_options(
        self,
        engine: medallion_core::query::EngineOptions,
    ) -> medallion_core::query::EngineOptions {
        let share = self.max_memory / 2;
        medallion_core::query::EngineOptions {
            target_partitions: 1,
            memory_limit: Some(engine.memory_limit.map_or(share, |m| m.min(share))),
            ..engine
        }
    }

    fn limits(self) -> medallion_host::guest::Limits {
        medallion_host::guest::Limits {
            max_memory: self.max_memory,
            timeout: self
                .timeout
                .map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
        }
    }

    fn instances(self) -> usize {
        self.instances
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }
}

/// `1.5GiB` → (1.5, "GiB"): a number and the unit after it, for sizes and durations.
pub(crate) fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// `512MiB`, `2GiB`, `1.5GB`, `1000000` (bytes).
fn parse_size(text: &str) -> Result<usize, String> {
    let (n, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a size like 512MiB or 2GiB"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit `{other}` (use MiB or GiB)")),
    };
    Ok((n * scale) as usize)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Loads the guest module, with time limits if `limits` has one; says so on stderr when it
/// had to be compiled (tens of seconds, once per build of the guest and kind).
fn load_guest(
    limits: &medallion_host::guest::Limits,
) -> anyhow::Result<medallion_host::guest::Guest> {
    let guest = medallion_host::guest::Guest::load(limits.timeout.is_some())?;
    if !guest.load.cached {
        eprintln!(
            "compiled the guest module in {:.1} s (cached for the next runs)",
            guest.load.ms / 1000.0
        );
    }
    Ok(guest)
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            spec,
            lake,
            json,
            engine,
            guest: _,
            watch,
            cluster,
        } if watch.watch => {
            anyhow::ensure!(
                cluster.url().is_none(),
                "--watch does not run on a cluster yet; drop --cluster or --watch"
            );
            let storage = engine.storage()?;
            let observers = watch::Observers::default();
            watch::watch(
                &spec,
                &lake,
                json,
                storage,
                engine.options(),
                watch,
                observers,
            )
            .await
        }
        Command::Run {
            spec,
            lake,
            json,
            engine,
            guest,
            watch: _,
            cluster,
        } => {
            run::run(
                &spec,
                &lake,
                json,
                engine.storage()?,
                engine.options(),
                guest,
                cluster.url(),
            )
            .await
        }
        Command::Extract {
            spec,
            lake,
            tables,
            json,
            follow,
            batch_interval,
            max_batch_rows,
            engine,
        } => {
            let cdc = extract::CdcArgs {
                follow,
                batch_interval,
                max_batch_rows,
            };
            extract::extract(&spec, &lake, &tables, json, &cdc, engine.storage()?).await
        }
        Command::Query {
            sql,
            tables,
            lake,
            format,
            max_rows,
            stats,
            engine,
            guest,
            cluster,
        } => {
            let query = query::Query {
                sql: &sql,
                tables: &tables,
                lake: lake.as_deref(),
                format,
                max_rows,
                stats,
            };
            if let Some(url) = cluster.url() {
                return query::query_on_cluster(query, url, engine.storage()?, engine.options())
                    .await;
            }
            query::query(query, engine.storage()?, engine.options(), guest).await
        }
        #[cfg(feature = "cluster")]
        Command::Cluster { role } => cluster_role(role).await,
        Command::Inspect { path, json, engine } => {
            inspect::inspect(&path, json, engine.storage()?).await
        }
        Command::Optimize {
            tables,
            lake,
            target_size,
            json,
        } => maintain::optimize(&tables, lake.as_deref(), target_size as u64, json).await,
        Command::Vacuum {
            tables,
            lake,
            retention_hours,
            force,
            apply,
            json,
        } => {
            let retention = retention_hours.map(|h| (h * 3.6e6) as i64);
            maintain::vacuum(&tables, lake.as_deref(), retention, force, apply, json).await
        }
        Command::Serve {
            lake,
            bind,
            pg_port,
            http_port,
            web,
            run,
            watch,
            password_file,
            tls_cert,
            tls_key,
            max_connections,
            max_memory,
            query_timeout,
            engine,
        } => {
            use anyhow::Context as _;
            let password = match password_file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("password file {}", f.display()))?;
                    let first = text.lines().next().unwrap_or("").to_string();
                    anyhow::ensure!(!first.is_empty(), "password file {} is empty", f.display());
                    Some(first)
                }
                None => std::env::var("MEDALLION_SERVE_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
            };
            anyhow::ensure!(
                run.is_some() || !watch.watch,
                "--watch needs --run PIPELINE.toml (the pipeline to watch)"
            );
            let live = match run {
                Some(_) => medallion_host::serve::Live {
                    alerts: Some(medallion_host::alerts::Broadcast::new()),
                    report: Some(Default::default()),
                },
                None => Default::default(),
            };
            let lake = medallion_host::local_fs::absolute(&lake)
                .with_context(|| format!("lake {lake}"))?;
            let opts = medallion_host::serve::ServeOptions {
                lake: lake.clone(),
                bind,
                pg_port,
                password,
                tls: tls_cert.zip(tls_key),
                max_connections,
                query_timeout: Some(query_timeout).filter(|d| !d.is_zero()),
                engine: medallion_core::query::EngineOptions {
                    memory_limit: Some(max_memory),
                    ..engine.options()
                },
                http_port,
                web: web.unwrap_or_else(medallion_host::serve::default_web_dir),
                live: live.clone(),
            };
            let storage: std::sync::Arc<dyn medallion_core::storage::Storage> = engine.storage()?;
            let server = medallion_host::serve::serve(storage.clone(), opts);
            match run {
                None => server.await,
                Some(spec) => {
                    let observers = watch::Observers {
                        alerts: live.alerts,
                        reports: live.report,
                    };
                    let watching = watch::watch(
                        &spec,
                        &lake,
                        false,
                        storage,
                        engine.options(),
                        watch,
                        observers,
                    );
                    // The server runs until the process stops; the watch loop until SIGINT or
                    // SIGTERM, after its batch commits — then the process ends.
                    tokio::select! {
                        served = server => served,
                        watched = watching => watched,
                    }
                }
            }
        }
        Command::Demo {
            dir,
            lake,
            scale,
            more,
            json,
            serve,
            pg_port,
            http_port,
            engine,
            guest,
        } => {
            demo::demo(
                &dir,
                &lake,
                scale,
                more,
                json,
                engine.storage()?,
                engine.options(),
                guest,
            )
            .await?;
            if !serve {
                return Ok(());
            }
            eprintln!(
                "\nserving the lake; try:  psql -h 127.0.0.1 -p {pg_port} -d lake -c 'SELECT * FROM gold.sales_by_region_day LIMIT 5'"
            );
            if http_port != 0 {
                eprintln!("and open the dashboard:  http://127.0.0.1:{http_port}/");
            }
            let opts = medallion_host::serve::ServeOptions {
                lake: medallion_host::local_fs::absolute(&lake)?,
                bind: std::net::Ipv4Addr::LOCALHOST.into(),
                pg_port,
                password: None,
                tls: None,
                max_connections: 100,
                query_timeout: Some(medallion_host::serve::time_limit::DEFAULT),
                engine: engine.options(),
                http_port,
                web: medallion_host::serve::default_web_dir(),
                live: Default::default(),
            };
            medallion_host::serve::serve(engine.storage()?, opts).await
        }
    }
}

/// `medallion cluster scheduler|executor`: runs until the process is stopped.
#[cfg(feature = "cluster")]
async fn cluster_role(role: ClusterRole) -> anyhow::Result<()> {
    use medallion_host::cluster;
    cluster::logging::init();
    let storage = cluster::native_storage()?;
    match role {
        ClusterRole::Scheduler {
            bind,
            port,
            executor_timeout,
        } => {
            let opts = cluster::scheduler::SchedulerOptions {
                bind,
                port,
                executor_timeout_secs: executor_timeout.max(2),
            };
            cluster::scheduler::run(opts, storage).await
        }
        ClusterRole::Executor {
            scheduler,
            bind,
            port,
            grpc_port,
            work_dir,
            concurrent_tasks,
            heartbeat,
        } => {
            let (scheduler_host, scheduler_port) =
                cluster::parse_scheduler(&scheduler).map_err(anyhow::Error::msg)?;
            let grpc_port = match grpc_port {
                Some(p) => p,
                None => port.checked_add(1).ok_or_else(|| {
                    anyhow::anyhow!("--port {port} leaves no port for gRPC; give --grpc-port")
                })?,
            };
            let opts = cluster::executor::ExecutorOptions {
                scheduler_host,
                scheduler_port,
                bind,
                port,
                grpc_port,
                work_dir,
                concurrent_tasks: concurrent_tasks.unwrap_or(0),
                heartbeat_secs: heartbeat,
            };
            cluster::executor::run(opts, storage).await
        }
    }
}
