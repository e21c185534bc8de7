//! `medallion cluster scheduler`: Ballista's scheduler, in this process. It plans each job
//! (listing and reading the footers of its files through [`super::stores`]), splits it into
//! stages and hands their tasks to the executors; it holds no data and writes nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ballista_core::utils::default_session_builder;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use medallion_core::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use medallion_core::datafusion::execution::SessionStateBuilder;
use medallion_core::storage::Storage;

use super::stores::LakeStores;

/// How to run the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: IpAddr,
    pub port: u16,
    /// An executor silent for this long is dropped and its tasks run elsewhere.
    pub executor_timeout_secs: u64,
}

/// Runs the scheduler until the process ends. Errors name the address.
pub async fn run(opts: SchedulerOptions, storage: Arc<dyn Storage>) -> anyhow::Result<()> {
    let addr = SocketAddr::new(opts.bind, opts.port);
    let mut config = SchedulerConfig {
        bind_host: opts.bind.to_string(),
        bind_port: opts.port,
        external_host: opts.bind.to_string(),
        executor_timeout_seconds: opts.executor_timeout_secs,
        // Ballista's defaults (180 s, checked every 15 s) leave a job waiting minutes on an
        // executor that was killed; a lost executor should cost seconds.
        expire_dead_executor_interval_seconds: (opts.executor_timeout_secs / 2).clamp(1, 5),
        no_executors_grace_period_seconds: opts.executor_timeout_secs,
        ..SchedulerConfig::default()
    };
    config = config.with_override_session_builder(Arc::new(move |session_config| {
        // Ballista's own session (its optimizer rules and functions), with Medallion's stores
        // so that plans over local, HTTP and S3 files can be made here.
        let base = default_session_builder(session_config)?;
        let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env())
            .with_object_store_registry(Arc::new(LakeStores::new(storage.clone())))
            .build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(base)
            .with_runtime_env(runtime)
            .build())
    }));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| anyhow::anyhow!("Ballista scheduler on {addr}: {e}"))?;
    eprintln!(
        "medallion cluster scheduler: listening on {addr} (clients: --cluster df://{addr}; executors: --scheduler {addr})"
    );
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(|e| anyhow::anyhow!("Ballista scheduler on {addr}: {e}"))
}
