//! Ad-hoc SQL over Parquet files and Delta tables, wherever a [`Storage`] can reach them,
//! and the DataFusion session every part of the core runs its SQL in.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::path::Path;

use crate::delta::{self, Snapshot};
use crate::error::{Context, Error, Result};
use crate::object_store_adapter::register_for;
use crate::source::resolve_files;
use crate::storage::Storage;

/// How much parallelism the caller grants. Browsers and wasm guests must use one partition:
/// DataFusion spawns tokio tasks to merge partitions, and there is no tokio there.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub target_partitions: usize,
    pub batch_size: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            target_partitions: 1,
            batch_size: 8192,
        }
    }
}

/// A DataFusion session configured for Medallion.
pub fn new_context(opts: EngineOptions) -> SessionContext {
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
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config.options_mut().execution.parquet.pushdown_filters = true;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    SessionContext::new_with_config(config)
}

/// Runs a query to completion; errors name the query's table (or "query") as context.
pub async fn collect_sql(ctx: &SessionContext, what: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await.context(|| format!("{what}: planning SQL"))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.context(|| format!("{what}: running SQL"))?;
    Ok((schema, batches))
}

/// A fixed set of Parquet files with known sizes and one schema: what a Delta snapshot or an
/// expanded glob names. Scanning it needs no listing and no HEAD requests.
#[derive(Debug)]
pub struct ParquetFilesTable {
    schema: SchemaRef,
    store_url: ObjectStoreUrl,
    files: Vec<(Path, u64)>,
}

impl ParquetFilesTable {
    /// A table of `files` (location, size) that all have `schema`.
    pub fn new(ctx: &SessionContext, storage: &Arc<dyn Storage>, schema: SchemaRef, files: &[(String, u64)]) -> Result<Self> {
        let store_url = match files.first() {
            Some((first, _)) => register_for(ctx, storage, first)?.0,
            None => ObjectStoreUrl::local_filesystem(),
        };
        let files = files
            .iter()
            .map(|(loc, size)| Ok((register_for(ctx, storage, loc)?.1, *size)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { schema, store_url, files })
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
        // Inexact: Parquet prunes row groups and pages, DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let groups_n = state.config().target_partitions().clamp(1, self.files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_n];
        for (i, (path, size)) in self.files.iter().enumerate() {
            groups[i % groups_n].push(PartitionedFile::new(path.as_ref(), *size));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(self.schema.clone().into());
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// A table over the live files of a Delta snapshot.
pub fn delta_table(ctx: &SessionContext, storage: &Arc<dyn Storage>, snapshot: &Snapshot) -> Result<Arc<ParquetFilesTable>> {
    ParquetFilesTable::new(ctx, storage, snapshot.schema.clone(), &snapshot.file_locations()).map(Arc::new)
}

/// A table over Parquet files, its schema read from the first file's footer.
pub async fn parquet_table(ctx: &SessionContext, storage: &Arc<dyn Storage>, locations: &[(String, u64)]) -> Result<Arc<ParquetFilesTable>> {
    let Some((first, _)) = locations.first() else {
        return Err(Error::Spec("no Parquet files to query".into()));
    };
    let (store_url, first_path) = register_for(ctx, storage, first)?;
    let store = ctx
        .runtime_env()
        .object_store(&store_url)
        .context(|| format!("reading {first}"))?;
    let meta = object_store::ObjectMeta {
        location: first_path,
        last_modified: Default::default(),
        size: locations[0].1,
        e_tag: None,
        version: None,
    };
    let state = ctx.state();
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let schema = format
        .infer_schema(&state, &store, &[meta])
        .await
        .context(|| format!("reading the schema of {first}"))?;
    ParquetFilesTable::new(ctx, storage, schema, locations).map(Arc::new)
}

/// What a location turned out to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Delta,
    Parquet,
}

/// Registers `location` as table `name`: a Delta table (`delta:` prefix, or a folder with a
/// `_delta_log/`), a Parquet file, or a glob of Parquet files.
pub async fn register_location(
    ctx: &SessionContext,
    storage: &Arc<dyn Storage>,
    name: &str,
    location: &str,
) -> Result<TableKind> {
    let (forced_delta, location) = match location.strip_prefix("delta:") {
        Some(rest) => (true, rest),
        None => (false, location),
    };
    let location = location.trim_end_matches('/');
    let is_glob = location.contains(['*', '?', '[']);
    let (provider, kind) = if !is_glob && (forced_delta || delta::is_delta_table(storage.as_ref(), location).await?) {
        let snapshot = Snapshot::load(storage.as_ref(), location).await?;
        (delta_table(ctx, storage, &snapshot)?, TableKind::Delta)
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
        (parquet_table(ctx, storage, &files).await?, TableKind::Parquet)
    };
    ctx.register_table(name, provider)
        .context(|| format!("registering table `{name}`"))?;
    Ok(kind)
}
