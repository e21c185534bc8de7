//! A Delta table that every query reads at its latest committed version: what a long-running
//! server needs, where a pipeline commits while clients query. Each scan lists the log once;
//! the snapshot is rebuilt only when the version moved. A query sees one version, never half
//! of a commit: the files it scans are those of the snapshot it loaded.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::bridge::{seam, share, unshare, Shared};
use crate::delta::{list_log, Snapshot};
use crate::query::ParquetFilesTable;
use crate::storage::Storage;
use crate::Result;

#[derive(Debug)]
pub struct LatestDeltaTable {
    storage: Shared,
    location: String,
    /// The last snapshot loaded; a scan reuses it while the log's latest version is the same.
    last: Mutex<Arc<Snapshot>>,
}

impl LatestDeltaTable {
    /// Opens the table at `location` (its current version gives the schema queries plan with).
    pub async fn open(storage: Arc<dyn Storage>, location: &str) -> Result<Self> {
        let snapshot = Snapshot::load(storage.as_ref(), location).await?;
        Ok(Self {
            storage: share(storage),
            location: location.to_string(),
            last: Mutex::new(Arc::new(snapshot)),
        })
    }

    fn last(&self) -> Arc<Snapshot> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The snapshot of the latest committed version, loading it only if the version moved.
    pub async fn latest(&self) -> Result<Arc<Snapshot>> {
        let storage = unshare(&self.storage);
        let known = self.last();
        let listing = list_log(storage.as_ref(), &self.location).await?;
        if listing.latest() == Some(known.version) {
            return Ok(known);
        }
        let fresh = Arc::new(Snapshot::load(storage.as_ref(), &self.location).await?);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

#[async_trait]
impl TableProvider for LatestDeltaTable {
    fn schema(&self) -> SchemaRef {
        let last = self.last();
        ParquetFilesTable::scan_schema(&last.schema, &last.metadata.partition_columns)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let planned = self.schema();
        let snapshot = seam(self.latest())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // The query was planned with the schema it saw; a commit that changed the schema since
        // (a column added) would shift the projection, so the query is asked to run again.
        if ParquetFilesTable::scan_schema(&snapshot.schema, &snapshot.metadata.partition_columns)
            != planned
        {
            return Err(DataFusionError::Plan(format!(
                "table {} changed its schema at version {} while this query was planned; run the query again",
                self.location, snapshot.version
            )));
        }
        let table = ParquetFilesTable::partitioned_in(
            state.runtime_env(),
            &unshare(&self.storage),
            snapshot.schema.clone(),
            &snapshot.metadata.partition_columns,
            &snapshot.live_files(),
        )
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        table.scan(state, projection, filters, limit).await
    }
}
