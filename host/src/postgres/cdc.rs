//! Change data capture from PostgreSQL (`mode = "cdc"`): logical replication with `pgoutput`.
//!
//! The session is pgwire-replication's (SCRAM, START_REPLICATION, standby status updates that
//! carry only the position we report); the `pgoutput` messages are decoded by pg_walstream's
//! parser, and column values — requested in binary — by the same decoder as snapshots.
//!
//! Exactly once, with no state outside the lake:
//! - First run: the slot is created with an exported snapshot; the table is read in that
//!   snapshot and committed as the bronze table's first version, recording the slot's
//!   consistent point in a Delta `txn` action ([`cdc_app_id`]). Rows carry `_op = 'r'`.
//! - Then: replication starts at the position the table records. Each micro-batch holds whole
//!   transactions; it is committed with the end position of its last transaction in the same
//!   `txn` action, and only after that commit is the position reported to PostgreSQL (which
//!   may then discard the WAL). A crash before the commit leaves the position unreported and
//!   the changes are sent again; transactions the table already covers are skipped. Rows carry
//!   `_op` (`I`, `U`, `D`), `_lsn` (the change's own WAL position, which orders the changes of
//!   one key) and `_commit_ts`.
//! - An update that changes the key is a delete of the old key and an update of the new one;
//!   a delete carries the key columns (all columns with `REPLICA IDENTITY FULL`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use medallion_core::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use medallion_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use medallion_core::clock::Clock;
use medallion_core::extract::{format_lsn, last_lsn, BronzeExtract, ExtractReport, Mark};
use medallion_core::pipeline::RunOptions;
use medallion_core::spec::{ExtractMode, PipelineSpec};
use medallion_core::storage::Storage;
use pg_walstream::{ColumnData, LogicalReplicationMessage, LogicalReplicationParser, TupleData};
use pgwire_replication::{
    FeedbackObserver, Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
    TlsConfig,
};
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use super::{
    connect, decode_column, describe_rows, parse_config, quote_ident, quote_relation,
    read_only_transaction, source_of, stream_rows, Ctx, Kind, PgColumn, PgError, FETCH_ROWS,
    PG_EPOCH_US,
};

/// How often the committed position is reported to the server (at most).
const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// How a cdc extract runs.
#[derive(Debug, Clone)]
pub struct CdcOptions {
    /// Keep streaming until `stop` is set; otherwise stop once every transaction committed
    /// before the extract started is in bronze.
    pub follow: bool,
    /// Commit once this many changes are waiting (at the next transaction boundary).
    pub max_batch_rows: u64,
    /// With `follow`: commit waiting changes at least this often.
    pub batch_interval: Duration,
    pub stop: Arc<AtomicBool>,
}

impl Default for CdcOptions {
    fn default() -> Self {
        CdcOptions {
            follow: false,
            max_batch_rows: 100_000,
            batch_interval: Duration::from_millis(200),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// One commit of a cdc extract, as `on_commit` sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CdcCommit {
    #[serde(flatten)]
    pub report: ExtractReport,
    /// When the oldest and the newest transaction in the commit committed in PostgreSQL
    /// (microseconds since the Unix epoch, the server's clock); absent for the snapshot.
    pub first_commit_us: Option<i64>,
    pub last_commit_us: Option<i64>,
}

/// Streams bronze table `name`'s changes (taking its initial snapshot first if it has none)
/// and returns what was committed in all; `on_commit` sees each commit as it lands.
pub async fn extract_cdc(
    spec: &PipelineSpec,
    name: &str,
    storage: Arc<dyn Storage>,
    clock: &dyn Clock,
    opts: &RunOptions,
    cdc: &CdcOptions,
    on_commit: &mut (dyn FnMut(&CdcCommit) + Send),
) -> Result<ExtractReport, PgError> {
    let (src, source_name, source) = source_of(spec, name)?;
    let relation = src.table.clone().unwrap_or_default();
    let setup = Setup {
        ctx: Ctx {
            table: name.to_string(),
            source_name: source_name.clone(),
            relation: relation.clone(),
        },
        slot: src.slot_name(name),
        publication: src.publication_name(name),
        create: src.create_slot,
        url: source.url.clone(),
    };
    let mut client = connect(&source_name, &source.url).await?;
    let oid = setup.relation_oid(&client).await?;
    setup.ensure_publication(&client).await?;
    let slot_exists = setup.slot_exists(&client).await?;

    let mut total = ExtractReport {
        table: name.to_string(),
        mode: ExtractMode::Cdc,
        rows: 0,
        files: 0,
        bytes_written: 0,
        version: None,
        watermark: None,
        lsn: None,
    };
    let add = |r: &ExtractReport, total: &mut ExtractReport| {
        total.rows += r.rows;
        total.files += r.files;
        total.bytes_written += r.bytes_written;
        total.version = r.version.or(total.version);
        total.lsn = r.lsn.clone();
    };

    let recorded = match last_lsn(storage.as_ref(), spec, &opts.lake, name).await? {
        Some(lsn) if slot_exists => lsn,
        Some(lsn) => {
            return Err(setup.error(format!(
                "replication slot `{}` does not exist any more, and the table has committed the changes up to {} from it; the changes since are lost to it. Re-snapshot: extract into a new bronze table (or drop this one) with create_slot = true",
                setup.slot,
                format_lsn(lsn)
            )))
        }
        None => {
            if slot_exists {
                if !setup.create {
                    return Err(setup.error(format!(
                        "replication slot `{}` exists but the table has no snapshot taken with it, so the changes before the slot began are unknown; drop the slot (SELECT pg_drop_replication_slot('{}')) or set create_slot = true to have it dropped and created with a snapshot",
                        setup.slot, setup.slot
                    )));
                }
                // Nothing was ever committed from it (a first run that stopped before its
                // snapshot committed): nothing depends on its position.
                setup.drop_slot(&client).await?;
            } else if !setup.create {
                return Err(setup.error(format!(
                    "replication slot `{}` does not exist; set create_slot = true in [bronze.{name}] to create it (with a consistent initial snapshot)",
                    setup.slot
                )));
            }
            let report = setup
                .initial_snapshot(
                    spec,
                    name,
                    &mut client,
                    &setup.config(0)?,
                    storage.clone(),
                    clock,
                    opts,
                )
                .await?;
            on_commit(&CdcCommit {
                report: report.clone(),
                first_commit_us: None,
                last_commit_us: None,
            });
            add(&report, &mut total);
            report_lsn(&report)
        }
    };
    drop(client);

    let mut stream = Stream {
        setup: &setup,
        spec,
        name,
        storage,
        clock,
        opts,
        cdc,
        oid,
        recorded,
        columns: None,
        txn: Vec::new(),
        in_txn: false,
        txn_rows: 0,
        txn_commit_us: 0,
        txn_skip: false,
        batch: None,
    };
    let mut backoff = Duration::from_millis(200);
    let mut sink = |c: &CdcCommit| {
        on_commit(c);
        add(&c.report, &mut total);
    };
    loop {
        match stream.session(&mut sink).await {
            Ok(()) => break,
            Err(e) if cdc.follow && !cdc.stop.load(Ordering::SeqCst) && e.retryable => {
                eprintln!(
                    "{name}: the replication session ended ({}); resuming from {} in {:.1} s",
                    e.error,
                    format_lsn(stream.recorded),
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.error),
        }
    }
    if total.lsn.is_none() {
        total.lsn = Some(format_lsn(stream.recorded));
    }
    Ok(total)
}

fn report_lsn(r: &ExtractReport) -> u64 {
    r.lsn
        .as_deref()
        .and_then(|s| Lsn::parse(s).ok())
        .map_or(0, |l| l.as_u64())
}

/// Names and settings of one cdc table, for its queries and messages.
struct Setup {
    ctx: Ctx,
    slot: String,
    publication: String,
    create: bool,
    url: String,
}

impl Setup {
    fn error(&self, message: String) -> PgError {
        PgError::Cdc {
            table: self.ctx.table.clone(),
            source_name: self.ctx.source_name.clone(),
            message,
        }
    }

    fn query_error(&self, what: &str, e: &tokio_postgres::Error) -> PgError {
        self.ctx.query(what, e)
    }

    async fn relation_oid(&self, client: &Client) -> Result<u32, PgError> {
        let oid: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[&self.ctx.relation])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.query_error("looking up the table", &e))?;
        oid.ok_or_else(|| PgError::MissingTable {
            table: self.ctx.table.clone(),
            source_name: self.ctx.source_name.clone(),
            relation: self.ctx.relation.clone(),
        })
    }

    /// The publication exists and covers the table (created or extended with `create_slot`).
    async fn ensure_publication(&self, client: &Client) -> Result<(), PgError> {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .map_err(|e| self.query_error("looking up the publication", &e))?
            .is_some();
        let relation = quote_relation(&self.ctx.relation);
        let publication = quote_ident(&self.publication);
        if !exists {
            if !self.create {
                return Err(self.error(format!(
                    "publication `{}` does not exist; create it (CREATE PUBLICATION {publication} FOR TABLE {relation}) or set create_slot = true",
                    self.publication
                )));
            }
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {publication} FOR TABLE {relation}"
                ))
                .await
                .map_err(|e| self.query_error("creating the publication", &e))?;
            return Ok(());
        }
        let covered = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 \
                 AND format('%I.%I', schemaname, tablename)::regclass = to_regclass($2)",
                &[&self.publication, &self.ctx.relation],
            )
            .await
            .map_err(|e| self.query_error("looking up the publication's tables", &e))?
            .is_some();
        if covered {
            return Ok(());
        }
        if !self.create {
            return Err(self.error(format!(
                "publication `{}` does not include {}; add it (ALTER PUBLICATION {publication} ADD TABLE {relation}) or set create_slot = true",
                self.publication, self.ctx.relation
            )));
        }
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {publication} ADD TABLE {relation}"
            ))
            .await
            .map_err(|e| self.query_error("adding the table to the publication", &e))
    }

    async fn slot_exists(&self, client: &Client) -> Result<bool, PgError> {
        let row = client
            .query_opt(
                "SELECT plugin::text, database::text = current_database() \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| self.query_error("looking up the replication slot", &e))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let plugin: Option<String> = row.get(0);
        let here: Option<bool> = row.get(1);
        if plugin.as_deref() != Some("pgoutput") || here != Some(true) {
            return Err(self.error(format!(
                "replication slot `{}` exists but is not a pgoutput slot of this database (plugin {}); choose another `slot` name",
                self.slot,
                plugin.unwrap_or_else(|| "none: a physical slot".into())
            )));
        }
        Ok(true)
    }

    async fn drop_slot(&self, client: &Client) -> Result<(), PgError> {
        eprintln!(
            "{}: dropping replication slot `{}`: the table never committed a snapshot taken with it",
            self.ctx.table, self.slot
        );
        client
            .query("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await
            .map_err(|e| self.query_error("dropping the unused replication slot", &e))?;
        Ok(())
    }

    /// Creates the slot with an exported snapshot, reads the table in that snapshot and
    /// commits it as the table's rows, recording the slot's consistent point.
    #[allow(clippy::too_many_arguments)]
    async fn initial_snapshot(
        &self,
        spec: &PipelineSpec,
        name: &str,
        client: &mut Client,
        config: &ReplicationConfig,
        storage: Arc<dyn Storage>,
        clock: &dyn Clock,
        opts: &RunOptions,
    ) -> Result<ExtractReport, PgError> {
        let mut session = ReplicationClient::connect_gated(config.clone())
            .await
            .map_err(|e| self.replication_error("connecting for replication", &e))?;
        let rows = session
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(&self.slot)
            ))
            .await
            .map_err(|e| self.replication_error("creating the replication slot", &e))?;
        let text = |i: usize| -> Option<String> {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (Some(point), Some(snapshot_name)) = (text(1), text(2)) else {
            return Err(self.error(
                "CREATE_REPLICATION_SLOT answered without a consistent point and snapshot".into(),
            ));
        };
        let consistent = Lsn::parse(&point)
            .map_err(|e| self.error(format!("the slot's consistent point `{point}`: {e}")))?
            .as_u64();
        eprintln!(
            "{name}: created replication slot `{}` at {point}; reading {} in its snapshot",
            self.slot, self.ctx.relation
        );

        let tx = read_only_transaction(client, &self.ctx).await?;
        tx.batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot_name.replace('\'', "''")
        ))
        .await
        .map_err(|e| self.query_error("adopting the slot's snapshot", &e))?;
        let sql = format!(
            "SELECT *, 'r'::text AS _op, 0::int8 AS _lsn, NULL::timestamptz AS _commit_ts FROM {}",
            quote_relation(&self.ctx.relation)
        );
        let (_, columns, schema) = describe_rows(&tx, &self.ctx, &sql).await?;
        let mut extract = BronzeExtract::begin(
            spec,
            name,
            storage,
            clock,
            opts,
            schema.clone(),
            Mark::Lsn {
                slot: self.slot.clone(),
                lsn: consistent,
                snapshot: true,
            },
        )
        .await?;
        let streamed =
            stream_rows(&tx, &self.ctx, &sql, &[], &columns, &schema, &mut extract).await;
        if let Err(e) = streamed {
            extract.abort().await;
            return Err(e);
        }
        let _ = tx.commit().await;
        let report = extract.finish().await?;
        // Ends the session that exported the snapshot; the slot stays, at its consistent point.
        drop(session);
        Ok(report)
    }

    fn replication_error(&self, what: &str, e: &PgWireError) -> PgError {
        self.error(format!(
            "{what} (slot `{}`, publication `{}`): {}",
            self.slot,
            self.publication,
            replication_message(e)
        ))
    }
}

/// The text of a replication error, without the library's prefixes doubled up.
fn replication_message(e: &PgWireError) -> String {
    match e {
        PgWireError::Server(m) | PgWireError::Auth(m) | PgWireError::Protocol(m) => m.clone(),
        other => other.to_string(),
    }
}

impl Setup {
    /// The replication session's settings, starting at `start` (0: at the slot's position).
    fn config(&self, start: u64) -> Result<ReplicationConfig, PgError> {
        let config = parse_config(&self.ctx.source_name, &self.url)?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or_default().to_string();
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let database = config
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        let replication = match config.get_hosts().first() {
            #[cfg(unix)]
            Some(Host::Unix(dir)) => ReplicationConfig::unix(
                dir.display().to_string(),
                port,
                user,
                password,
                database,
                self.slot.clone(),
                self.publication.clone(),
            ),
            Some(Host::Tcp(host)) => ReplicationConfig::new(
                host.clone(),
                user,
                password,
                database,
                self.slot.clone(),
                self.publication.clone(),
            )
            .with_port(port)
            .with_tls(TlsConfig::disabled()),
            None => {
                return Err(self.error("the source's URL names no host".into()));
            }
        };
        Ok(replication
            .with_start_lsn(Lsn::from_u64(start))
            .with_binary(true)
            .with_status_interval(STATUS_INTERVAL)
            // Observing feedback is what lets `feedback_pending_since` tell whether the last
            // position reached the server.
            .with_feedback_observer(FeedbackObserver::new(|_| {}))
            .with_application_name("medallion"))
    }
}

/// One change of the table, as received.
struct Change {
    op: &'static str,
    lsn: u64,
    values: Vec<Option<Bytes>>,
}

/// A replication session's failure, and whether a new session may get past it.
struct SessionError {
    error: PgError,
    retryable: bool,
}

impl From<PgError> for SessionError {
    fn from(error: PgError) -> Self {
        SessionError {
            error,
            retryable: false,
        }
    }
}

/// The micro-batch being written: whole transactions, committed together.
struct Batch {
    extract: BronzeExtract,
    /// The columns the batch began with (the table's as the stream described it).
    schema: SchemaRef,
    started: Instant,
    rows: u64,
    first_commit_us: i64,
    last_commit_us: i64,
}

struct Stream<'a> {
    setup: &'a Setup,
    spec: &'a PipelineSpec,
    name: &'a str,
    storage: Arc<dyn Storage>,
    clock: &'a dyn Clock,
    opts: &'a RunOptions,
    cdc: &'a CdcOptions,
    oid: u32,
    /// The position the table has committed up to.
    recorded: u64,
    /// The table's columns as the last `Relation` message gave them, and which are the key.
    columns: Option<Arc<Vec<(PgColumn, bool)>>>,
    /// The changes of the transaction being received (not yet written to the batch).
    txn: Vec<Change>,
    in_txn: bool,
    /// Changes of the transaction being received already written to the batch.
    txn_rows: u64,
    /// Its commit time (microseconds since the Unix epoch).
    txn_commit_us: i64,
    /// It is one the table already has.
    txn_skip: bool,
    batch: Option<Batch>,
}

impl Stream<'_> {
    /// One replication session from the recorded position: until caught up (or, following,
    /// until stopped). What it commits stays committed if it fails.
    async fn session(
        &mut self,
        on_commit: &mut (dyn FnMut(&CdcCommit) + Send),
    ) -> Result<(), SessionError> {
        self.txn.clear();
        self.in_txn = false;
        self.txn_rows = 0;
        self.txn_skip = false;
        self.columns = None;
        // Where "caught up" is: the server's WAL position now.
        let target = match self.cdc.follow {
            true => u64::MAX,
            false => self.current_wal_lsn().await?,
        };
        if target <= self.recorded {
            return Ok(());
        }
        let config = self.setup.config(self.recorded)?;
        let mut client = ReplicationClient::connect(config)
            .await
            .map_err(|e| self.fail("connecting for replication", &e))?;
        client
            .wait_started()
            .await
            .map_err(|e| self.fail("starting replication", &e))?;
        let mut parser = LogicalReplicationParser::with_protocol_version(1);
        let tick = Duration::from_millis(50);
        let mut last_event = Instant::now();
        let outcome: Result<(), SessionError> = loop {
            if self.cdc.stop.load(Ordering::SeqCst) && !self.in_txn {
                break Ok(());
            }
            let event = match tokio::time::timeout(tick, client.recv()).await {
                Err(_) => None,
                Ok(Ok(Some(event))) => Some(event),
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(e)) => break Err(self.fail("receiving changes", &e)),
            };
            let Some(event) = event else {
                if let Err(e) = self.flush_if_due(&client, on_commit).await {
                    break Err(e.into());
                }
                // Caught up as far as the server sends: a keepalive should have said so, but
                // a quiet server may send none for a while.
                if !self.cdc.follow && !self.in_txn && last_event.elapsed() > Duration::from_secs(5)
                {
                    break Ok(());
                }
                continue;
            };
            last_event = Instant::now();
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.in_txn = true;
                    self.txn.clear();
                    self.txn_rows = 0;
                    self.txn_commit_us = commit_time_micros.saturating_add(PG_EPOCH_US);
                    // Its commit record lies before what the table records: already committed.
                    self.txn_skip = final_lsn.as_u64() < self.recorded;
                }
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => {
                    if let Err(e) = self.change(&mut parser, wal_start.as_u64(), &data).await {
                        break Err(e.into());
                    }
                    if self.columns_changed() && self.txn_rows == 0 {
                        // The batch's rows have the old columns: they go in a commit of their own.
                        if let Err(e) = self.flush(&client, on_commit).await {
                            break Err(e.into());
                        }
                    }
                    if self.txn.len() >= FETCH_ROWS as usize {
                        // A large transaction goes to data files as it comes; they are committed
                        // only with the whole transaction.
                        if let Err(e) = self.spill_txn().await {
                            break Err(e.into());
                        }
                    }
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    self.in_txn = false;
                    if self.columns_changed() {
                        // The batch's rows have the old columns: they are committed on their own.
                        if let Err(e) = self.flush(&client, on_commit).await {
                            break Err(e.into());
                        }
                    }
                    if let Err(e) = self
                        .commit_txn(&client, end_lsn.as_u64(), commit_time_micros)
                        .await
                    {
                        break Err(e.into());
                    }
                    if let Err(e) = self.flush_if_due(&client, on_commit).await {
                        break Err(e.into());
                    }
                    if end_lsn.as_u64() >= target {
                        break Ok(());
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    if !self.in_txn && self.batch.is_none() && wal_end.as_u64() > self.recorded {
                        // Every transaction committed before `wal_end` has been received and
                        // had no change of this table: nothing is lost by releasing its WAL.
                        client.update_applied_lsn(wal_end);
                    }
                    if !self.in_txn && wal_end.as_u64() >= target {
                        break Ok(());
                    }
                }
                ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            }
        };
        let outcome = match outcome {
            // Caught up or stopped: what is complete is committed.
            Ok(()) => self
                .flush(&client, on_commit)
                .await
                .map_err(SessionError::from),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            if let Some(batch) = self.batch.take() {
                batch.extract.abort().await;
            }
        }
        // Let the last position committed reach the server before the session ends (else the
        // slot keeps WAL the lake no longer needs until the next session reports it).
        let deadline = Instant::now() + STATUS_INTERVAL * 4;
        while client.feedback_pending_since().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = client.shutdown().await;
        outcome
    }

    fn fail(&self, what: &str, e: &PgWireError) -> SessionError {
        let retryable = match e {
            PgWireError::Io(_) | PgWireError::Task(_) => true,
            // Class 57: the server is shutting down or restarting.
            PgWireError::Server(m) => {
                m.contains("57P") || m.contains("shutting down") || m.contains("starting up")
            }
            _ => false,
        };
        SessionError {
            error: self.setup.replication_error(what, e),
            retryable,
        }
    }

    async fn current_wal_lsn(&self) -> Result<u64, SessionError> {
        let client = connect(&self.setup.ctx.source_name, &self.setup.url)
            .await
            .map_err(|error| SessionError {
                retryable: matches!(error, PgError::Unreachable { .. }),
                error,
            })?;
        let text: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| {
                self.setup
                    .query_error("reading the server's WAL position", &e)
            })?;
        Lsn::parse(&text).map(|l| l.as_u64()).map_err(|e| {
            self.setup
                .error(format!("the WAL position `{text}`: {e}"))
                .into()
        })
    }

    /// Takes in one pgoutput message inside a transaction.
    async fn change(
        &mut self,
        parser: &mut LogicalReplicationParser,
        lsn: u64,
        data: &[u8],
    ) -> Result<(), PgError> {
        let message = parser
            .parse_wal_message(data)
            .map_err(|e| {
                self.setup.error(format!(
                    "an undecodable pgoutput message at {}: {e}",
                    format_lsn(lsn)
                ))
            })?
            .message;
        match message {
            LogicalReplicationMessage::Relation {
                relation_id,
                columns,
                ..
            } if relation_id == self.oid => {
                let decoded = columns
                    .iter()
                    .map(|c| {
                        Kind::of(c.type_id, c.type_modifier, &c.name)
                            .map(|kind| {
                                (
                                    PgColumn {
                                        name: c.name.to_string(),
                                        kind,
                                    },
                                    c.is_key(),
                                )
                            })
                            .map_err(|m| self.setup.ctx.column(&c.name, m))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let changed = self.columns.as_ref().is_some_and(|old| {
                    old.len() != decoded.len()
                        || old
                            .iter()
                            .zip(&decoded)
                            .any(|(a, b)| a.0.name != b.0.name || a.0.kind != b.0.kind)
                });
                if changed && (!self.txn.is_empty() || self.txn_rows > 0) {
                    return Err(self.setup.error(format!(
                        "the columns of {} changed inside a transaction at {}; cdc cannot split a transaction between two schemas — re-snapshot into a new bronze table",
                        self.setup.ctx.relation,
                        format_lsn(lsn)
                    )));
                }
                if changed {
                    // The rows so far have the old columns: they go in a commit of their own.
                    self.columns = Some(Arc::new(decoded));
                    return Ok(());
                }
                self.columns = Some(Arc::new(decoded));
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } if relation_id == self.oid => {
                let values = self.values(&tuple, None, lsn)?;
                self.txn.push(Change {
                    op: "I",
                    lsn,
                    values,
                });
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } if relation_id == self.oid => {
                let values = self.values(&new_tuple, old_tuple.as_ref(), lsn)?;
                if let Some(old) = &old_tuple {
                    let old_values = self.values(old, None, lsn)?;
                    if self.key_changed(&old_values, &values) {
                        self.txn.push(Change {
                            op: "D",
                            lsn,
                            values: old_values,
                        });
                    }
                }
                self.txn.push(Change {
                    op: "U",
                    lsn,
                    values,
                });
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } if relation_id == self.oid => {
                let values = self.values(&old_tuple, None, lsn)?;
                self.txn.push(Change {
                    op: "D",
                    lsn,
                    values,
                });
            }
            LogicalReplicationMessage::Truncate { relation_ids, .. }
                if relation_ids.contains(&self.oid) =>
            {
                return Err(self.setup.error(format!(
                    "{} was truncated at {}; a truncate is not a row change cdc can apply. Re-snapshot: extract into a new bronze table (or drop this one) with create_slot = true",
                    self.setup.ctx.relation,
                    format_lsn(lsn)
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// A tuple's values in the table's column order; an unchanged TOASTed value is taken from
    /// `old` (sent with `REPLICA IDENTITY FULL`) or is an error.
    fn values(
        &self,
        tuple: &TupleData,
        old: Option<&TupleData>,
        lsn: u64,
    ) -> Result<Vec<Option<Bytes>>, PgError> {
        let Some(columns) = &self.columns else {
            return Err(self.setup.error(format!(
                "a change at {} came before the table's description (Relation message)",
                format_lsn(lsn)
            )));
        };
        let mut out = Vec::with_capacity(columns.len());
        for (i, (col, _)) in columns.iter().enumerate() {
            let data: Option<&ColumnData> = tuple.get_column(i);
            let value = match data {
                None => None,
                Some(d) if d.is_null() => None,
                Some(d) if d.is_unchanged() => {
                    match old.and_then(|o| o.get_column(i)).filter(|o| o.is_binary()) {
                        Some(o) => Some(o.raw_bytes()),
                        None => {
                            return Err(self.setup.ctx.column(
                                &col.name,
                                format!(
                                    "an update at {} left this large (TOASTed) value unchanged and PostgreSQL did not send it; run ALTER TABLE {} REPLICA IDENTITY FULL so that updates carry every column",
                                    format_lsn(lsn),
                                    quote_relation(&self.setup.ctx.relation)
                                ),
                            ))
                        }
                    }
                }
                Some(d) if d.is_binary() => Some(d.raw_bytes()),
                Some(_) => {
                    return Err(self.setup.ctx.column(
                        &col.name,
                        "PostgreSQL sent this column in text form; its type has no binary form to decode".into(),
                    ))
                }
            };
            out.push(value);
        }
        Ok(out)
    }

    fn columns_changed(&self) -> bool {
        match (&self.batch, &self.columns) {
            (Some(batch), Some(columns)) => batch.schema != cdc_schema(columns),
            _ => false,
        }
    }

    fn key_changed(&self, old: &[Option<Bytes>], new: &[Option<Bytes>]) -> bool {
        let Some(columns) = &self.columns else {
            return false;
        };
        columns
            .iter()
            .enumerate()
            .any(|(i, (_, key))| *key && old.get(i) != new.get(i))
    }

    /// A transaction ended: its changes join the batch (unless the table already has them).
    async fn commit_txn(
        &mut self,
        client: &ReplicationClient,
        end_lsn: u64,
        commit_time_micros: i64,
    ) -> Result<(), PgError> {
        if self.txn_skip || end_lsn <= self.recorded {
            self.txn.clear();
            return Ok(());
        }
        self.txn_commit_us = commit_time_micros.saturating_add(PG_EPOCH_US);
        self.spill_txn().await?;
        let rows = std::mem::take(&mut self.txn_rows);
        match &mut self.batch {
            Some(batch) => {
                if rows > 0 {
                    batch.rows += rows;
                    batch.last_commit_us = self.txn_commit_us;
                }
                batch.extract.advance_lsn(end_lsn)?;
            }
            // Nothing waits to be committed and this transaction had nothing for the table.
            None => client.update_applied_lsn(Lsn::from_u64(end_lsn)),
        }
        Ok(())
    }

    /// Writes the current transaction's changes received so far into the batch.
    async fn spill_txn(&mut self) -> Result<(), PgError> {
        if self.txn_skip || self.txn.is_empty() {
            self.txn.clear();
            return Ok(());
        }
        let changes = std::mem::take(&mut self.txn);
        let Some(columns) = self.columns.clone() else {
            return Err(self
                .setup
                .error("changes came without the table's description".into()));
        };
        let schema = cdc_schema(&columns);
        if self.batch.as_ref().is_some_and(|b| b.schema != schema) {
            return Err(self
                .setup
                .error("the table's columns changed while a batch was open".into()));
        }
        if self.batch.is_none() {
            let extract = BronzeExtract::begin(
                self.spec,
                self.name,
                self.storage.clone(),
                self.clock,
                self.opts,
                schema.clone(),
                Mark::Lsn {
                    slot: self.setup.slot.clone(),
                    lsn: self.recorded,
                    snapshot: false,
                },
            )
            .await?;
            self.batch = Some(Batch {
                extract,
                schema: schema.clone(),
                started: Instant::now(),
                rows: 0,
                first_commit_us: self.txn_commit_us,
                last_commit_us: self.txn_commit_us,
            });
        }
        let Some(batch) = self.batch.as_mut() else {
            return Ok(());
        };
        for chunk in changes.chunks(FETCH_ROWS as usize) {
            let rows = decode_changes(
                &self.setup.ctx,
                &columns,
                &schema,
                chunk,
                self.txn_commit_us,
            )?;
            batch.extract.push(rows).await?;
        }
        self.txn_rows += changes.len() as u64;
        Ok(())
    }

    async fn flush_if_due(
        &mut self,
        client: &ReplicationClient,
        on_commit: &mut (dyn FnMut(&CdcCommit) + Send),
    ) -> Result<(), PgError> {
        let due = self.batch.as_ref().is_some_and(|b| {
            b.rows >= self.cdc.max_batch_rows
                || (self.cdc.follow && b.started.elapsed() >= self.cdc.batch_interval)
        });
        if due && !self.in_txn {
            self.flush(client, on_commit).await?;
        }
        Ok(())
    }

    /// Commits the batch, then tells the server its position (never before).
    async fn flush(
        &mut self,
        client: &ReplicationClient,
        on_commit: &mut (dyn FnMut(&CdcCommit) + Send),
    ) -> Result<(), PgError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let report = batch.extract.finish().await?;
        let lsn = report_lsn(&report);
        self.recorded = lsn;
        client.update_applied_lsn(Lsn::from_u64(lsn));
        on_commit(&CdcCommit {
            report,
            first_commit_us: Some(batch.first_commit_us),
            last_commit_us: Some(batch.last_commit_us),
        });
        Ok(())
    }
}

/// The bronze columns of a cdc table: the table's, then `_op`, `_lsn`, `_commit_ts`.
fn cdc_schema(columns: &[(PgColumn, bool)]) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|(c, _)| Field::new(&c.name, c.kind.data_type(), true))
        .collect();
    fields.push(Field::new("_op", DataType::Utf8, true));
    fields.push(Field::new("_lsn", DataType::Int64, true));
    fields.push(Field::new(
        "_commit_ts",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    ));
    Arc::new(Schema::new(fields))
}

/// Changes as one Arrow batch of `schema`.
fn decode_changes(
    ctx: &Ctx,
    columns: &[(PgColumn, bool)],
    schema: &SchemaRef,
    changes: &[Change],
    commit_us: i64,
) -> Result<RecordBatch, PgError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 3);
    for (i, (col, _)) in columns.iter().enumerate() {
        let values = changes
            .iter()
            .map(|c| Ok(c.values.get(i).and_then(|v| v.as_deref())));
        let array = decode_column(col.kind, changes.len(), values)
            .map_err(|e| ctx.column(&col.name, format!("a value could not be decoded: {e}")))?;
        arrays.push(array);
    }
    arrays.push(Arc::new(StringArray::from_iter_values(
        changes.iter().map(|c| c.op),
    )));
    arrays.push(Arc::new(Int64Array::from_iter_values(
        changes.iter().map(|c| c.lsn as i64),
    )));
    arrays.push(Arc::new(
        TimestampMicrosecondArray::from(vec![commit_us; changes.len()]).with_timezone("UTC"),
    ));
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| {
        PgError::Core(medallion_core::Error::Table {
            table: ctx.table.clone(),
            message: format!("assembling a batch of changes: {e}"),
        })
    })
}
