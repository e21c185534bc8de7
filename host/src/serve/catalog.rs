//! The lake as PostgreSQL schemas: `bronze`, `silver`, `gold` and `quarantine`, each Delta
//! table a table read at its latest committed version by every query. Tables a pipeline
//! creates while the server runs appear within [`REFRESH`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medallion_core::datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use medallion_core::datafusion::prelude::SessionContext;
use medallion_core::latest_table::LatestDeltaTable;
use medallion_core::pipeline::lake_tables;
use medallion_core::storage::Storage;

/// How often the lake is listed for new tables.
pub const REFRESH: Duration = Duration::from_secs(2);

pub const LAYERS: [&str; 4] = ["bronze", "silver", "gold", "quarantine"];

/// The schemas of the lake, registered in the session's default catalog.
pub struct LakeCatalog {
    storage: Arc<dyn Storage>,
    lake: String,
    schemas: Vec<(&'static str, Arc<MemorySchemaProvider>)>,
    known: std::sync::Mutex<BTreeSet<String>>,
}

impl LakeCatalog {
    pub fn new(
        ctx: &SessionContext,
        storage: Arc<dyn Storage>,
        lake: &str,
    ) -> anyhow::Result<Self> {
        let catalog_name = ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let catalog = ctx
            .catalog(&catalog_name)
            .context("the session has no default catalog")?;
        let mut schemas = Vec::new();
        for layer in LAYERS {
            let schema = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(layer, schema.clone())?;
            schemas.push((layer, schema));
        }
        Ok(Self {
            storage,
            lake: lake.to_string(),
            schemas,
            known: Default::default(),
        })
    }

    /// Registers the lake's tables not yet known; returns how many there are in all.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let found = lake_tables(self.storage.as_ref(), &self.lake).await?;
        for t in &found {
            if self.lock().contains(&t.location) {
                continue;
            }
            let table = LatestDeltaTable::open(self.storage.clone(), &t.location)
                .await
                .with_context(|| format!("opening {}", t.location))?;
            let Some((_, schema)) = self.schemas.iter().find(|(l, _)| *l == t.layer) else {
                continue;
            };
            schema.register_table(t.name.clone(), Arc::new(table))?;
            self.lock().insert(t.location.clone());
        }
        Ok(found.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}
