//! Ad-hoc SQL over Parquet files and Delta tables, wherever a [`Storage`] can reach them,
//! and the DataFusion session every part of the core runs its SQL in.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::path::Path;

use crate::bridge::object_store::{register_for, route};
use crate::bridge::parquet_reader::{
    load_metadata, ParquetReading, ReadSettings, StorageReaderFactory,
};
use crate::bridge::{share, unshare, Shared};
use crate::delta::{self, Snapshot};
use crate::error::{Context, Error, Result};
use crate::source::resolve_files;
use crate::storage::Storage;

/// How much parallelism the caller grants. Browsers and wasm guests must use one partition:
/// DataFusion spawns tokio tasks to merge partitions, and there is no tokio there.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    pub target_partitions: usize,
    pub batch_size: usize,
    /// How Parquet is read through the storage: footer hint, coalescing, concurrency.
    pub reading: ReadSettings,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            target_partitions: 1,
            batch_size: 8192,
            reading: ReadSettings::default(),
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
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let config = config.with_extension(Arc::new(ParquetReading {
        settings: opts.reading,
        ..Default::default()
    }));
    SessionContext::new_with_config(config)
}

/// Runs a query to completion; errors name the query's table (or "query") as context.
pub async fn collect_sql(
    ctx: &SessionContext,
    what: &str,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx
        .sql(sql)
        .await
        .context(|| format!("{what}: planning SQL"))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .context(|| format!("{what}: running SQL"))?;
    Ok((schema, batches))
}

/// A fixed set of Parquet files with known sizes and one schema: what a Delta snapshot or an
/// expanded glob names. Scanning it needs no listing and no HEAD requests.
#[derive(Debug)]
pub struct ParquetFilesTable {
    schema: SchemaRef,
    store_url: ObjectStoreUrl,
    files: Vec<(Path, u64)>,
    storage: Shared,
    /// What object paths are relative to (see [`route`]).
    prefix: String,
}

impl ParquetFilesTable {
    /// A table of `files` (location, size) that all have `schema`.
    pub fn new(
        ctx: &SessionContext,
        storage: &Arc<dyn Storage>,
        schema: SchemaRef,
        files: &[(String, u64)],
    ) -> Result<Self> {
        let (store_url, prefix) = match files.first() {
            Some((first, _)) => (register_for(ctx, storage, first)?.0, route(first)?.1),
            None => (ObjectStoreUrl::local_filesystem(), "/".to_string()),
        };
        let files = files
            .iter()
            .map(|(loc, size)| {
                let (url, path) = register_for(ctx, storage, loc)?;
                if url != store_url {
                    return Err(Error::Spec(format!(
                        "{loc}: all files of one table must be on the same server"
                    )));
                }
                Ok((path, *size))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            store_url,
            files,
            storage: share(storage.clone()),
            prefix,
        })
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
        let groups_n = state
            .config()
            .target_partitions()
            .clamp(1, self.files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_n];
        for (i, (path, size)) in self.files.iter().enumerate() {
            groups[i % groups_n].push(PartitionedFile::new(path.as_ref(), *size));
        }
        let reading = reading_of(state.config());
        let mut options = state.table_options().parquet.clone();
        options.global.enable_page_index = reading.settings.page_index;
        let source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(StorageReaderFactory::new(
                unshare(&self.storage),
                self.prefix.clone(),
                reading,
            )));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
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
    ParquetFilesTable::new(
        ctx,
        storage,
        snapshot.schema.clone(),
        &snapshot.file_locations(),
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
    let looks_parquet = location.to_ascii_lowercase().ends_with(".parquet");
    let is_delta = !is_glob
        && (forced_delta
            || (!looks_parquet && delta::is_delta_table(storage.as_ref(), location).await?));
    let (provider, kind) = if is_delta {
        let snapshot = Snapshot::load(storage.as_ref(), location).await?;
        (delta_table(ctx, storage, &snapshot)?, TableKind::Delta)
    } else if !is_glob {
        // One file: its footer read (a suffix read) also tells its size, so no HEAD.
        let reading = reading_of(ctx.state().config());
        let (metadata, meta) = load_metadata(storage, location, None, &reading).await?;
        let schema = arrow_schema(metadata, location)?;
        let table =
            ParquetFilesTable::new(ctx, storage, schema, &[(location.to_string(), meta.size)])?;
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
