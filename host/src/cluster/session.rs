//! A client session on a Ballista cluster: SQL planned here, run by the executors, results
//! streamed back here. Tables are registered as file lists ([`super::tables`]): Delta tables
//! from their snapshot's live files, Parquet files and globs as listed here.

use std::collections::HashMap;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::execution_plans::DistributedQueryExec;
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::TryStreamExt;
use medallion_core::arrow::array::RecordBatch;
use medallion_core::arrow::datatypes::SchemaRef;
use medallion_core::datafusion::datasource::file_format::format_as_file_type;
use medallion_core::datafusion::datasource::file_format::parquet::ParquetFormat;
use medallion_core::datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use medallion_core::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use medallion_core::datafusion::error::DataFusionError;
use medallion_core::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use medallion_core::datafusion::execution::SessionStateBuilder;
use medallion_core::datafusion::logical_expr::LogicalPlanBuilder;
use medallion_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use medallion_core::datafusion::physical_plan::{
    execute_stream, ExecutionPlan, SendableRecordBatchStream,
};
use medallion_core::datafusion::prelude::{cast, DataFrame, Expr, SessionContext};
use medallion_core::delta::{At, LiveFile, Snapshot};
use medallion_core::error::{Error, Result};
use medallion_core::pipeline::SqlEngine;
use medallion_core::query::{self, EngineOptions, TableKind};
use medallion_core::storage::Storage;

use super::stores::LakeStores;
use super::tables::file_list_table;
use super::Context;

/// A session whose queries run on the cluster at `scheduler` (`host:port`).
#[derive(Clone)]
pub struct ClusterSession {
    pub ctx: SessionContext,
    pub scheduler: String,
    storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for ClusterSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSession(df://{})", self.scheduler)
    }
}

impl ClusterSession {
    /// Connects to the scheduler at `url` (`df://HOST:PORT`); the session has Medallion's
    /// settings (plain Utf8 strings, partitions, batch size), which Ballista carries to the
    /// scheduler and executors with every job.
    pub async fn connect(
        url: &str,
        storage: Arc<dyn Storage>,
        engine: EngineOptions,
    ) -> Result<Self> {
        let (host, port) = super::parse_scheduler(url).map_err(Error::Spec)?;
        let scheduler = format!("{host}:{port}");
        // Ballista connects lazily, at the first query; a wrong address should fail here,
        // naming it, not as a gRPC error in the middle of a run.
        let reachable = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(&scheduler),
        )
        .await;
        if !matches!(reachable, Ok(Ok(_))) {
            return Err(Error::Location {
                location: format!("df://{scheduler}"),
                message: "no Ballista scheduler answers there (start one with `medallion cluster scheduler`)".into(),
            });
        }
        let local = query::new_context(engine);
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(LakeStores::new(storage.clone())))
            .build_arc()
            .context(|| format!("session on df://{scheduler}"))?;
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(local.state().config().clone())
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::remote_with_state(&format!("df://{scheduler}"), state)
            .await
            .context(|| format!("session on the Ballista cluster at df://{scheduler}"))?;
        Ok(Self {
            ctx,
            scheduler,
            storage,
        })
    }

    /// Registers `location` as table `name`, as [`query::register_location`] does locally:
    /// a Delta table (`delta:` prefix, or a folder with `_delta_log/`, with an optional
    /// time-travel suffix), a Parquet file, or a glob of them.
    pub async fn register_location(&self, name: &str, location: &str) -> Result<TableKind> {
        let query::Located { location, at, kind } =
            query::locate(self.storage.as_ref(), location, At::Latest).await?;
        if kind == query::LocationKind::Delta {
            let snapshot = Snapshot::load_at(self.storage.as_ref(), location, at).await?;
            self.register_files(
                name,
                snapshot.schema.clone(),
                &snapshot.metadata.partition_columns,
                &snapshot.live_files(),
            )?;
            return Ok(TableKind::Delta {
                version: snapshot.version,
            });
        }
        // Parquet files and globs: listed and their schema read here, by DataFusion, through
        // the same stores the executors use.
        let url = ListingTableUrl::parse(location).context(|| format!("table `{name}`"))?;
        let state = self.ctx.state();
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .infer_schema(&state)
            .await
            .context(|| format!("table `{name}`: reading the schema of {location}"))?;
        let table = ListingTable::try_new(config).context(|| format!("table `{name}`"))?;
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(name, Arc::new(table))
            .context(|| format!("registering table `{name}`"))?;
        Ok(TableKind::Parquet)
    }

    /// Registers `name` as exactly `files` (replacing what it was).
    pub fn register_files(
        &self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<()> {
        let table = file_list_table(&self.ctx, name, schema, partition_columns, files)?;
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(name, table)
            .context(|| format!("registering table `{name}` on df://{}", self.scheduler))?;
        Ok(())
    }

    /// Runs `sql` on the cluster to completion. Errors name `what`, the scheduler and, once
    /// the scheduler has accepted it, the Ballista job.
    pub async fn collect(&self, what: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        // Plain strings, as the in-process engine answers (see `string_views`).
        let stream = medallion_core::string_views::plain_stream(self.stream(what, sql).await?);
        let schema = stream.schema();
        let batches = stream
            .try_collect()
            .await
            .map_err(|source| Error::DataFusion {
                context: format!("{what}: running SQL"),
                source,
            })?;
        Ok((schema, batches))
    }

    /// Submits `sql` as a Ballista job; its rows stream back as the executors produce them.
    /// A failure names the scheduler and the job.
    pub async fn stream(&self, what: &str, sql: &str) -> Result<SendableRecordBatchStream> {
        let df = self.plan_sql(what, sql).await?;
        self.stream_df(what, df).await
    }

    fn on(&self) -> String {
        format!("on the Ballista cluster at df://{}", self.scheduler)
    }

    async fn plan_sql(&self, what: &str, sql: &str) -> Result<DataFrame> {
        self.ctx.sql(sql).await.map_err(|source| Error::DataFusion {
            context: format!("{what}: planning SQL {}", self.on()),
            source,
        })
    }

    /// Runs `df` as a Ballista job; its rows stream back as the executors produce them.
    async fn stream_df(&self, what: &str, df: DataFrame) -> Result<SendableRecordBatchStream> {
        let on = self.on();
        let plan = df
            .create_physical_plan()
            .await
            .map_err(|source| Error::DataFusion {
                context: format!("{what}: planning SQL {on}"),
                source,
            })?;
        let stream = execute_stream(plan.clone(), self.ctx.task_ctx()).map_err(|source| {
            Error::DataFusion {
                context: format!("{what}: running SQL {on}"),
                source,
            }
        })?;
        let schema = stream.schema();
        // The job id is known once the job was submitted, i.e. by the time rows or errors come.
        let failed = stream.map_err(move |e| {
            let job = job_id(&plan)
                .map(|j| format!(", job {j}"))
                .unwrap_or_default();
            DataFusionError::Context(format!("{on}{job}"), Box::new(e))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, failed)))
    }
}

/// The id of the Ballista job a client plan submitted, if it got one.
fn job_id(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if let Some(query) = plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>() {
        return query.job_id().map(|j| j.as_str().to_string());
    }
    plan.children().into_iter().find_map(job_id)
}

#[async_trait::async_trait]
impl SqlEngine for ClusterSession {
    fn register(
        &self,
        table: &str,
        schema: SchemaRef,
        partition_columns: &[String],
        files: &[LiveFile],
    ) -> Result<()> {
        self.register_files(table, schema, partition_columns, files)
    }

    async fn stream_sql(&self, what: &str, sql: &str) -> Result<SendableRecordBatchStream> {
        self.stream(what, sql).await
    }

    /// Executors write a table's files themselves where they can reach its location as the
    /// client does: a local lake (one machine, or a filesystem they share). Medallion's S3
    /// and HTTP stores take no multipart uploads, so rows for those come back to be written.
    fn writes_files(&self, location: &str) -> bool {
        !medallion_core::storage::is_url(location)
    }

    async fn sql_schema(&self, what: &str, sql: &str) -> Result<SchemaRef> {
        let df = self.plan_sql(what, sql).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    async fn write_files(&self, what: &str, sql: &str, schema: SchemaRef, dir: &str) -> Result<()> {
        let df = self.plan_sql(what, sql).await?;
        let planning = |source| Error::DataFusion {
            context: format!("{what}: planning the write of {dir} {}", self.on()),
            source,
        };
        // The files get the table's column types, as the client's own writer would cast them.
        let columns: Vec<Expr> = df
            .schema()
            .columns()
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(Expr::Column(c), f.data_type().clone()).alias(f.name()))
            .collect();
        let df = df.select(columns).map_err(planning)?;
        let parquet = format_as_file_type(Arc::new(ParquetFormatFactory::new()));
        let copy = LogicalPlanBuilder::copy_to(
            df.logical_plan().clone(),
            format!("{}/", dir.trim_end_matches('/')),
            parquet,
            HashMap::new(),
            vec![],
        )
        .and_then(|b| b.build())
        .map_err(planning)?;
        let df = self
            .ctx
            .execute_logical_plan(copy)
            .await
            .map_err(planning)?;
        let stream = self.stream_df(what, df).await?;
        let on = self.on();
        stream
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| Error::DataFusion {
                context: format!("{what}: writing {dir} {on}"),
                source,
            })?;
        Ok(())
    }
}
