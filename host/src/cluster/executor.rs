//! `medallion cluster executor`: Ballista's executor, in this process. It registers with the
//! scheduler, runs the tasks it is given (reading data files through [`super::stores`],
//! writing shuffle files under its work folder) and serves their results over Arrow Flight.

use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use medallion_core::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use medallion_core::storage::Storage;

use super::stores::LakeStores;

/// How to run an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    pub bind: String,
    /// Arrow Flight (results and shuffles); the gRPC port for tasks is `grpc_port`.
    pub port: u16,
    pub grpc_port: u16,
    /// Shuffle files and spills; a temporary folder if absent.
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once; 0 = the number of CPU cores.
    pub concurrent_tasks: usize,
    /// Seconds between the heartbeats that tell the scheduler this executor is alive.
    pub heartbeat_secs: u64,
}

/// Runs the executor until the process is stopped (SIGTERM or Ctrl-C) or the scheduler
/// stops it. Errors name the scheduler and the ports.
pub async fn run(opts: ExecutorOptions, storage: Arc<dyn Storage>) -> anyhow::Result<()> {
    let scheduler = format!("{}:{}", opts.scheduler_host, opts.scheduler_port);
    let ports = format!("{}:{} (gRPC {})", opts.bind, opts.port, opts.grpc_port);
    let work_dir = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("executor work folder {}: {e}", d.display()))?;
            Some(d.to_string_lossy().into_owned())
        }
        None => None,
    };
    let temp_dir = work_dir.clone();
    let runtime_producer: ballista_core::RuntimeProducer = Arc::new(move |_config| {
        let mut builder = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(LakeStores::new(storage.clone())));
        if let Some(dir) = &temp_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        builder.build_arc()
    });
    let mut config = ExecutorProcessConfig {
        bind_host: opts.bind.clone(),
        external_host: Some(opts.bind.clone()),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        // Wait for a scheduler that is still starting instead of failing at once.
        scheduler_connect_timeout_seconds: 30,
        work_dir,
        executor_heartbeat_interval_seconds: opts.heartbeat_secs.max(1),
        print_thread_info: false,
        ..ExecutorProcessConfig::default()
    };
    if opts.concurrent_tasks > 0 {
        config.vcores = opts.concurrent_tasks;
    }
    config.override_runtime_producer = Some(runtime_producer);
    eprintln!(
        "medallion cluster executor: serving on {ports}, scheduler {scheduler}, executor id {}",
        config.executor_id
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| anyhow::anyhow!("Ballista executor on {ports} (scheduler {scheduler}): {e}"))
}
