//! Ad-hoc SQL over Parquet files and Delta tables, wherever a [`Storage`] can reach them,
//! and the DataFusion session every part of the core runs its SQL in.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::path::Path;

use crate::bridge::object_store::{register_for, route};
use crate::bridge::parquet_reader::{
    load_metadata, FilterPushdown, ParquetReading, ReadSettings, StorageReaderFactory,
};
use crate::bridge::{seam, share, unshare, Shared};
use crate::decimal_arithmetic::DecimalArithmetic;
use crate::delta::{self, partition_fields, At, LiveFile, Snapshot};
use crate::error::{Context, Error, Result};
use crate::late_materialisation;
use crate::source::resolve_files;
use crate::storage::Storage;
use crate::string_views;

/// How much parallelism the caller grants. Browsers and wasm guests must use one partition:
/// DataFusion spawns tokio tasks to merge partitions, and there is no tokio there.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    pub target_partitions: usize,
    pub batch_size: usize,
    /// How Parquet is read through the storage: footer hint, coalescing, concurrency.
    pub reading: ReadSettings,
    /// Bytes that the session's queries may hold at once (sorts, joins, aggregates); a query
    /// that needs more fails with an error saying so. No limit if absent.
    pub memory_limit: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            target_partitions: 1,
            batch_size: 8192,
            reading: ReadSettings::default(),
            memory_limit: None,
        }
    }
}

/// A DataFusion session configured for Medallion.
pub fn new_context(opts: EngineOptions) -> SessionContext {
    let (config, runtime) = config_with_memory(session_config(opts), opts.memory_limit);
    // Built from scratch rather than from an existing state: `new_from_existing` turns off
    // the default catalog in the config, which the cluster session copies.
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(crate::short_key_groups::ShortKeyGroups))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.add_optimizer_rule(Arc::new(DecimalArithmetic));
    ctx.add_optimizer_rule(Arc::new(crate::grouped_sums::GroupedSums));
    ctx
}

/// The configuration [`new_context`] gives its session.
pub(crate) fn session_config(opts: EngineOptions) -> SessionConfig {
    let partitions = opts.target_partitions.max(1);
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(opts.batch_size)
        .with_information_schema(true)
        .with_repartition_joins(partitions > 1)
        .with_repartition_aggregations(partitions > 1)
        .with_repartition_windows(partitions > 1)
        .with_repartition_sorts(partitions > 1)
        .with_repartition_file_scans(partitions > 1)
        .with_coalesce_batches(true);
    // Plain Utf8 rather than Utf8View: it is what Delta stores and what every reader expects.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    config.with_extension(Arc::new(ParquetReading {
        settings: opts.reading,
        ..Default::default()
    }))
}

fn config_with_memory(
    config: SessionConfig,
    memory_limit: Option<usize>,
) -> (SessionConfig, Arc<RuntimeEnv>) {
    match memory_limit {
        None => (config, Arc::new(RuntimeEnv::default())),
        Some(limit) => {
            use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
            use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
            use datafusion::execution::runtime_env::RuntimeEnvBuilder;
            // Natively, sorts, aggregates and sort-merge joins spill to a temporary folder
            // when they reach their share of the limit; in wasm there is no disk, so they fail
            // with an error naming the limit instead.
            let disk = match cfg!(target_arch = "wasm32") {
                true => DiskManagerMode::Disabled,
                false => DiskManagerMode::OsTmpDirectory,
            };
            // A hash join's build side cannot spill, a sort-merge join can. Each sort keeps
            // back memory for merging its spills (10 MB by default); a plan has several sorts
            // per partition, so the reserve is a share of the limit.
            let reserve = (limit / 32).clamp(256 << 10, 10 << 20);
            let config = config
                .set_bool("datafusion.optimizer.prefer_hash_join", false)
                .set_usize("datafusion.execution.sort_spill_reservation_bytes", reserve);
            // The error of a query over the limit names what held the memory.
            let pool = TrackConsumersPool::new(
                FairSpillPool::new(limit),
                std::num::NonZeroUsize::MIN.saturating_add(4),
            );
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(pool))
                .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk))
                .build_arc();
            match runtime {
                Ok(runtime) => (config, runtime),
                // Only a temporary folder that cannot be created fails here: run without
                // spilling, so a query over the limit reports it.
                Err(_) => (
                    config,
                    Arc::new(RuntimeEnv {
                        memory_pool: Arc::new(FairSpillPool::new(limit)),
                        ..Default::default()
                    }),
                ),
            }
        }
    }
}

/// Runs a query as a stream of batches, so its rows need not all be in memory at once;
/// errors name the query's table (or "query") as context. Strings may come as views (see
/// [`string_views`]): for writers, which cast to the table's schema.
pub async fn stream_sql(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
    let df = ctx
        .sql(sql)
        .await
        .context(|| format!("{what}: planning SQL"))?;
    df.execute_stream()
        .await
        .context(|| format!("{what}: running SQL"))
}

/// Runs a query to completion; errors name the query's table (or "query") as context.
/// Strings come as plain `Utf8`, never as views.
pub async fn collect_sql(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = plan_sql(ctx, what, sql).await?;
    collect_plan(ctx, what, plan).await
}

/// The physical plan of `sql` in `ctx`, to look at before running it ([`collect_plan`]).
pub async fn plan_sql(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let planning = || format!("{what}: planning SQL");
    ctx.sql(sql)
        .await
        .context(planning)?
        .create_physical_plan()
        .await
        .context(planning)
}

/// Runs a plan of `ctx`'s to completion, as [`collect_sql`] does.
pub async fn collect_plan(
    ctx: &SessionContext,
    what: &str,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = string_views::plain_schema(&plan.schema());
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .and_then(|b| {
            b.iter()
                .map(|b| string_views::plain_batch(b, &schema))
                .collect()
        })
        .context(|| format!("{what}: running SQL"))?;
    Ok((schema, batches))
}

/// A fixed set of Parquet files with known sizes and one schema: what a Delta snapshot or an
/// expanded glob names. Scanning it needs no listing and no HEAD requests. A partitioned
/// table's partition columns come from each file's values, not from the files, and filters
/// on them skip whole files.
#[derive(Debug)]
pub struct ParquetFilesTable {
    /// The table's columns: the files' columns, then the partition columns.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    store_url: ObjectStoreUrl,
    files: Vec<TableFile>,
    storage: Shared,
    /// What object paths are relative to (see [`route`]).
    prefix: String,
}

/// One data file of a [`ParquetFilesTable`].
#[derive(Debug)]
struct TableFile {
    path: Path,
    size: u64,
    /// In the order of the table's partition columns.
    partition_values: Vec<ScalarValue>,
    /// Its row count, if the log gives it (`numRecords`).
    rows: Option<u64>,
}

impl ParquetFilesTable {
    /// A table of `files` (location, size) that all have `schema`.
    pub fn new(
        ctx: &SessionContext,
        storage: &Arc<dyn Storage>,
        schema: SchemaRef,
        files: &[(String, u64)],
    ) -> Result<Self> {
        let files: Vec<LiveFile> = files
            .iter()
            .map(|(location, size)| LiveFile {
                location: location.clone(),
                size: *size,
                partition_values: vec![],
                rows: None,
            })
            .collect();
        Self::partitioned(ctx, storage, schema, &[], &files)
    }

    /// A table of `files` partitioned by `partition_columns` (columns of `schema`, whose
    /// values each file carries); the other columns of `schema` are in the files.
    pub fn partitioned(
        ctx: &SessionContext,
        storage: &Arc<dyn Storage>,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<Self> {
        Self::partitioned_in(
            &ctx.runtime_env(),
            storage,
            schema,
            partition_columns,
            files,
        )
    }

    /// [`Self::partitioned`] given the runtime the files' object stores are registered in (a
    /// table built while planning a query has the session's, not its context).
    pub fn partitioned_in(
        runtime: &RuntimeEnv,
        storage: &Arc<dyn Storage>,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<Self> {
        let (store_url, prefix) = match files.first() {
            Some(first) => (
                register_for(runtime, storage, &first.location)?.0,
                route(&first.location)?.1,
            ),
            None => (ObjectStoreUrl::local_filesystem(), "/".to_string()),
        };
        let partition_fields: Vec<FieldRef> = partition_fields(&schema, partition_columns)
            .into_iter()
            .map(Arc::new)
            .collect();
        let file_schema = Arc::new(string_views::read_as_views(&delta::file_schema(
            &schema,
            partition_columns,
        )));
        let table_schema = Self::scan_schema(&schema, partition_columns);
        let files = files
            .iter()
            .map(|f| {
                let (url, path) = register_for(runtime, storage, &f.location)?;
                if url != store_url {
                    return Err(Error::Spec(format!(
                        "{}: all files of one table must be on the same server",
                        f.location
                    )));
                }
                let values = partition_fields
                    .iter()
                    .enumerate()
                    .map(|(i, field)| {
                        let v = f.partition_values.get(i).cloned().flatten();
                        delta::typed_value(field, v.as_deref(), &f.location)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(TableFile {
                    path,
                    size: f.size,
                    partition_values: values,
                    rows: f.rows,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema: table_schema,
            file_schema,
            partition_fields,
            store_url,
            files,
            storage: share(storage.clone()),
            prefix,
        })
    }

    /// The same files scanned with plain `Utf8` strings rather than views. Pipelines build
    /// tables this way: under `--memory-limit`, reading views made the retail run's peak RSS
    /// grow with its sources (3 → 9 days: 280 → 399 MiB) where plain strings stay flat, and
    /// every row they read is written again as plain strings anyway.
    pub fn with_plain_strings(self) -> Self {
        Self {
            schema: string_views::plain_schema(&self.schema),
            file_schema: string_views::plain_schema(&self.file_schema),
            ..self
        }
    }

    /// The columns a scan yields: the files' columns, then the partition columns (a
    /// partitioned Delta table's own order may interleave them). Strings in the files are
    /// read as views (see [`string_views`]).
    pub fn scan_schema(schema: &SchemaRef, partition_columns: &[String]) -> SchemaRef {
        let file_schema =
            string_views::read_as_views(&delta::file_schema(schema, partition_columns));
        Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .cloned()
                .chain(
                    partition_fields(schema, partition_columns)
                        .into_iter()
                        .map(Arc::new),
                )
                .collect::<Vec<_>>(),
        ))
    }

    /// Whether the scan decodes the filter's columns first (see [`late_materialisation`]);
    /// `Auto` judges by the footer of the scan's first file, which the scan reads anyway.
    async fn late_materialise(
        &self,
        filters: &[Expr],
        projection: Option<&Vec<usize>>,
        (first, size): (Path, u64),
        reading: &ParquetReading,
    ) -> bool {
        let mode = reading.settings.filter_pushdown;
        if mode == FilterPushdown::Auto && !late_materialisation::has_equality(filters) {
            return false;
        }
        let columns: Vec<&str> = match projection {
            Some(p) => p
                .iter()
                .map(|&i| self.schema.field(i).name().as_str())
                .collect(),
            None => self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect(),
        };
        let footer = match mode {
            FilterPushdown::Auto => {
                let location = crate::storage::join(&self.prefix, first.as_ref());
                let storage = unshare(&self.storage);
                // A footer that cannot be read fails the scan itself, with its own error.
                seam(async move { load_metadata(&storage, &location, Some(size), reading).await })
                    .await
                    .ok()
                    .map(|(m, _)| m)
            }
            _ => None,
        };
        late_materialisation::push_down(mode, filters, &columns, footer.as_deref())
    }

    /// Which files may hold rows matching `filters`: those whose partition values pass every
    /// filter that reads only partition columns (NULL counts as not passing, as in WHERE).
    fn files_matching(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> datafusion::error::Result<Vec<bool>> {
        let mut keep = vec![true; self.files.len()];
        if self.partition_fields.is_empty() || filters.is_empty() {
            return Ok(keep);
        }
        let names: Vec<&str> = self
            .partition_fields
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns = (0..self.partition_fields.len())
            .map(|i| {
                ScalarValue::iter_to_array(self.files.iter().map(|f| f.partition_values[i].clone()))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        for filter in filters {
            let refs = filter.column_refs();
            if refs.is_empty() || !refs.iter().all(|c| names.contains(&c.name.as_str())) {
                continue;
            }
            let expr = state.create_physical_expr(filter.clone(), &df_schema)?;
            let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
            let Some(mask) = result.as_any().downcast_ref::<BooleanArray>() else {
                continue;
            };
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= mask.is_valid(i) && mask.value(i);
            }
        }
        Ok(keep)
    }
}

#[async_trait]
impl TableProvider for ParquetFilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: partitions skip files, Parquet prunes row groups and pages, DataFusion
        // still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let keep = self.files_matching(state, filters)?;
        let files: Vec<&TableFile> = self
            .files
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(f, _)| f)
            .collect();
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let first = (files[0].path.clone(), files[0].size);
        // Exact when every file's count is known (Delta's `numRecords`): the planner then
        // builds joins on the smaller side, e.g. a one-row CROSS JOIN side, instead of
        // emitting one batch per row of the other. Unknown rather than wrong if the sum does
        // not fit (a 32-bit `usize` in wasm).
        let rows: Option<usize> = files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.rows?))
            .and_then(|n| usize::try_from(n).ok());
        let groups_n = state.config().target_partitions().clamp(1, files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_n];
        for (i, file) in files.into_iter().enumerate() {
            // From the parsed path as it is: `PartitionedFile::new` would percent-encode it
            // again (`São` → `S%C3%A3o`, `%` → `%25`) and name a file that does not exist.
            let meta = object_store::ObjectMeta {
                location: file.path.clone(),
                last_modified: chrono::DateTime::<chrono::Utc>::default(),
                size: file.size,
                e_tag: None,
                version: None,
            };
            groups[i % groups_n].push(
                PartitionedFile::from(meta).with_partition_values(file.partition_values.clone()),
            );
        }
        let reading = reading_of(state.config());
        let mut options = state.table_options().parquet.clone();
        options.global.enable_page_index = reading.settings.page_index;
        if self
            .late_materialise(filters, projection, first, &reading)
            .await
        {
            options.global.pushdown_filters = true;
            options.global.reorder_filters = true;
        }
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = ParquetSource::new(table_schema)
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(StorageReaderFactory::new(
                unshare(&self.storage),
                self.prefix.clone(),
                reading,
            )));
        let mut statistics = Statistics::new_unknown(&self.schema);
        if let Some(rows) = rows {
            statistics.num_rows = Precision::Exact(rows);
        }
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The session's Parquet read settings and footer cache (see [`new_context`]).
pub fn reading_of(config: &SessionConfig) -> Arc<ParquetReading> {
    config.get_extension::<ParquetReading>().unwrap_or_default()
}

/// A table over the live files of a Delta snapshot.
pub fn delta_table(
    ctx: &SessionContext,
    storage: &Arc<dyn Storage>,
    snapshot: &Snapshot,
) -> Result<Arc<ParquetFilesTable>> {
    let files = snapshot.live_files();
    for file in &files {
        storage.note_immutable(&file.location, file.size);
    }
    ParquetFilesTable::partitioned(
        ctx,
        storage,
        snapshot.schema.clone(),
        &snapshot.metadata.partition_columns,
        &files,
    )
    .map(Arc::new)
}

/// A table over Parquet files (location, size), its schema read from the first file's footer.
pub async fn parquet_table(
    ctx: &SessionContext,
    storage: &Arc<dyn Storage>,
    locations: &[(String, u64)],
) -> Result<Arc<ParquetFilesTable>> {
    let Some((first, _)) = locations.first() else {
        return Err(Error::Spec("no Parquet files to query".into()));
    };
    let reading = reading_of(ctx.state().config());
    let (metadata, _) = load_metadata(storage, first, Some(locations[0].1), &reading).await?;
    let schema = arrow_schema(metadata, first)?;
    ParquetFilesTable::new(ctx, storage, schema, locations).map(Arc::new)
}

/// The Arrow schema of a Parquet file, as DataFusion will read it.
fn arrow_schema(
    metadata: Arc<datafusion::parquet::file::metadata::ParquetMetaData>,
    location: &str,
) -> Result<SchemaRef> {
    let arrow = ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new()).map_err(|e| {
        Error::Format {
            location: location.to_string(),
            message: format!("unsupported schema: {e}"),
        }
    })?;
    Ok(arrow.schema().clone())
}

/// What a location turned out to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A Delta table, read at this version.
    Delta {
        version: u64,
    },
    Parquet,
}

/// What a table location names (see [`locate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Delta,
    ParquetFile,
    ParquetGlob,
}

/// A table location taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'a> {
    /// The path, without `delta:`, a time-travel suffix or a trailing `/`.
    pub location: &'a str,
    /// The version asked for: `at` if given, else the location's suffix.
    pub at: At,
    pub kind: LocationKind,
}

/// Reads a table location as every runtime registers it: a Delta table (`delta:` prefix, or a
/// folder with `_delta_log/`, with an optional time-travel suffix), a Parquet file, or a glob
/// of them. Only a location that could be a Delta table's folder is probed for a log; asking a
/// Parquet location for a version is an error naming it.
pub async fn locate<'a>(storage: &dyn Storage, location: &'a str, at: At) -> Result<Located<'a>> {
    let (forced_delta, location) = match location.strip_prefix("delta:") {
        Some(rest) => (true, rest),
        None => (false, location),
    };
    let (location, suffix_at) = split_time_travel(location)?;
    let at = if at == At::Latest { suffix_at } else { at };
    let location = location.trim_end_matches('/');
    let kind = if crate::storage::wildcard_at(location).is_some() {
        LocationKind::ParquetGlob
    } else if forced_delta
        || (!crate::storage::names_one_file(location)
            && delta::is_delta_table(storage, location).await?)
    {
        LocationKind::Delta
    } else {
        LocationKind::ParquetFile
    };
    if kind != LocationKind::Delta && at != At::Latest {
        return Err(Error::Spec(format!(
            "{location}: time travel ({at}) needs a Delta table, and this is Parquet"
        )));
    }
    Ok(Located { location, at, kind })
}

/// Splits a time-travel suffix off a table location: `PATH@12` (version 12) or
/// `PATH@2026-11-30T12:00:00Z` (the version current at that time, RFC 3339). A location
/// without one is the latest version.
pub fn split_time_travel(location: &str) -> Result<(&str, At)> {
    let Some((path, suffix)) = location.rsplit_once('@') else {
        return Ok((location, At::Latest));
    };
    // `@` inside a URL's authority (user@host), its query or a folder name is not a suffix.
    if suffix.contains('/') || path.is_empty() || crate::storage::file_part(path) != path {
        return Ok((location, At::Latest));
    }
    if let Ok(v) = suffix.parse::<u64>() {
        return Ok((path, At::Version(v)));
    }
    if suffix.starts_with(|c: char| c.is_ascii_digit()) && suffix.contains('-') {
        let at = At::from_rfc3339(suffix).map_err(|e| {
            Error::Spec(format!(
                "{location}: the suffix is neither a version number nor a time: {e}"
            ))
        })?;
        return Ok((path, at));
    }
    Ok((location, At::Latest))
}

/// Registers `location` as table `name`: a Delta table (`delta:` prefix, or a folder with a
/// `_delta_log/`), a Parquet file, or a glob of Parquet files. A Delta table may carry a
/// time-travel suffix (see [`split_time_travel`]).
pub async fn register_location(
    ctx: &SessionContext,
    storage: &Arc<dyn Storage>,
    name: &str,
    location: &str,
) -> Result<TableKind> {
    register_location_at(ctx, storage, name, location, At::Latest).await
}

/// [`register_location`] of a Delta table's version `at` (if not latest, it overrides a
/// suffix).
pub async fn register_location_at(
    ctx: &SessionContext,
    storage: &Arc<dyn Storage>,
    name: &str,
    location: &str,
    at: At,
) -> Result<TableKind> {
    let Located { location, at, kind } = locate(storage.as_ref(), location, at).await?;
    let (provider, kind) = if kind == LocationKind::Delta {
        let snapshot = Snapshot::load_at(storage.as_ref(), location, at).await?;
        let kind = TableKind::Delta {
            version: snapshot.version,
        };
        (delta_table(ctx, storage, &snapshot)?, kind)
    } else if kind == LocationKind::ParquetFile {
        // One file: its footer read (a suffix read) also tells its size, so no HEAD.
        let reading = reading_of(ctx.state().config());
        let (metadata, meta) = load_metadata(storage, location, None, &reading).await?;
        // The footer's count (the sum of its row groups', see `load_metadata`) makes the
        // table's count exact, which `count(*)` is then answered from, without a scan.
        let rows = u64::try_from(metadata.file_metadata().num_rows()).ok();
        let schema = arrow_schema(metadata, location)?;
        let file = LiveFile {
            location: location.to_string(),
            size: meta.size,
            partition_values: vec![],
            rows,
        };
        let table = ParquetFilesTable::partitioned(ctx, storage, schema, &[], &[file])?;
        (Arc::new(table), TableKind::Parquet)
    } else {
        let files: Vec<(String, u64)> = resolve_files(storage.as_ref(), "", location)
            .await?
            .into_iter()
            .map(|m| (m.location, m.size))
            .collect();
        if files.is_empty() {
            return Err(Error::NotFound {
                location: location.to_string(),
            });
        }
        (
            parquet_table(ctx, storage, &files).await?,
            TableKind::Parquet,
        )
    };
    ctx.register_table(name, provider)
        .context(|| format!("registering table `{name}`"))?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster session builds its state from this config alone, so the config itself
    /// must still ask for the default catalog.
    #[test]
    fn a_session_from_the_config_has_the_default_catalog() {
        let ctx = new_context(EngineOptions::default());
        assert!(ctx.catalog("datafusion").is_some());
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(ctx.state().config().clone())
            .with_default_features()
            .build();
        let copy = SessionContext::new_with_state(state);
        assert!(copy.catalog("datafusion").is_some());
    }

    #[test]
    fn time_travel_suffixes() {
        assert_eq!(split_time_travel("/l/t").unwrap(), ("/l/t", At::Latest));
        assert_eq!(
            split_time_travel("/l/t@3").unwrap(),
            ("/l/t", At::Version(3))
        );
        assert_eq!(
            split_time_travel("/l/t@2026-11-30T12:00:00Z").unwrap(),
            ("/l/t", At::Timestamp(1_796_040_000_000))
        );
        assert_eq!(
            split_time_travel("http://u@h/t").unwrap(),
            ("http://u@h/t", At::Latest)
        );
        assert!(split_time_travel("/l/t@2026-13-01").is_err());
        assert_eq!(
            split_time_travel("https://h/t.parquet?token=a@5").unwrap(),
            ("https://h/t.parquet?token=a@5", At::Latest)
        );
    }
}
