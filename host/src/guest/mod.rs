//! The wasmtime batch runner: the core, built for `wasm32-wasip1` (`host/guest`), run as a
//! sandboxed guest. The guest asks for every byte through the imports in [`abi`]; the host
//! answers only for the paths and URLs in the job's [`grants`], caps each instance's memory
//! and time ([`Limits`]), and runs independent tables of a pipeline in parallel instances
//! ([`job`]).
//!
//! A map:
//! - this file: loading the module (compiled once, then from the cache in [`cache`]), one
//!   instance per request, and what a failed instance means (cap, timeout, refusal, trap).
//! - [`abi`]: the host functions of the `medallion` import module.
//! - [`wasi`]: the handful of WASI calls the guest's standard library makes.
//! - [`grants`]: what a job may read and write.
//! - [`job`]: a pipeline run across parallel instances, and a query in one.
//! - [`staged_check`]: what a guest staged, checked against the grants before the host
//!   commits or removes any of it.

pub mod abi;
pub mod cache;
pub mod grants;
mod huge_pages;
pub mod job;
pub mod staged_check;
pub mod wasi;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medallion_core::storage::Storage;
use rand::SeedableRng;
use wasmtime::{Config, Engine, Linker, Module, ResourceLimiter, Store, Trap, TypedFunc};

use crate::SystemClock;
use grants::Grants;

/// How often the epoch advances; timeouts are this precise.
const EPOCH_TICK: Duration = Duration::from_millis(50);

/// Where the guest module is: `MEDALLION_GUEST` if set, else where the build put it.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MEDALLION_GUEST") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("MEDALLION_GUEST_BUILT"))
}

/// Caps for one guest instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory of one instance, in bytes.
    pub max_memory: usize,
    /// Wall time of the whole job (every instance of it); `None` for no limit.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: 2 << 30,
            timeout: None,
        }
    }
}

/// How the module was loaded, for `--stats` and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct LoadInfo {
    /// Whether the compiled module came from the cache.
    pub cached: bool,
    pub ms: f64,
}

/// The compiled guest module and the engine that runs it; shared by every instance.
pub struct Guest {
    engine: Engine,
    module: Module,
    linker: Linker<GuestState>,
    pub load: LoadInfo,
    ticking: Arc<AtomicBool>,
    /// Whether the code was compiled with epoch checks, which time limits need.
    timeouts: bool,
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

/// What one instance's host functions work with.
pub struct GuestState {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) grants: Arc<Grants>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) clock: SystemClock,
    pub(crate) started: Instant,
    /// The answer waiting for the guest's `take`.
    pub(crate) pending: Vec<u8>,
    /// The first request the grants refused.
    pub(crate) refused: Option<String>,
    /// Objects this instance wrote: removed if it fails, since a guest stopped by a trap
    /// cannot clean up after itself.
    pub(crate) written: Vec<String>,
    /// What the guest wrote to stdout and stderr (the end of it).
    pub(crate) log: Vec<u8>,
    pub(crate) progress: Arc<dyn Fn(&serde_json::Value) + Send + Sync>,
    pub(crate) rng: rand_chacha::ChaCha8Rng,
    cap: MemoryCap,
}

/// Refuses memory growth past the cap, remembering that it did.
struct MemoryCap {
    max: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Why a guest request failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot load the guest module {path}: {message}")]
    Load { path: String, message: String },
    #[error("the guest exceeded its {cap} memory cap while {what} (raise it with --max-memory)")]
    Memory { cap: String, what: String },
    #[error("the guest ran past the {limit:?} time limit while {what} (raise it with --timeout)")]
    Timeout { limit: Duration, what: String },
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
    /// Committing the staged tables failed; the core's error says which committed.
    #[error("committing: {0}")]
    Commit(#[source] medallion_core::Error),
    /// A table staged in this process (`--engine native`) failed, as the core says.
    #[error(transparent)]
    InProcess(medallion_core::Error),
    #[error("the guest crashed while {what}: {message}{}", fmt_log(.log))]
    Crashed {
        what: String,
        message: String,
        log: String,
    },
}

fn fmt_log(log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        String::new()
    } else {
        format!("\nguest output:\n{log}")
    }
}

/// `2 GiB`-style sizes (powers of 1024, as memory is counted).
pub fn human_mib(bytes: usize) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// A request's context for an instance: storage, grants, caps, progress.
#[derive(Clone)]
pub struct Context {
    pub storage: Arc<dyn Storage>,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    /// When the job started (its timeout counts from here).
    pub started: Instant,
    pub runtime: tokio::runtime::Handle,
    pub progress: Arc<dyn Fn(&serde_json::Value) + Send + Sync>,
}

/// How the module at `path` is compiled; `timeouts`: with epoch checks (see [`Guest::load`]).
fn compile_config(path: &std::path::Path, timeouts: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(timeouts);
    config.memory_reservation(huge_pages::RESERVATION);
    if path == std::path::Path::new(env!("MEDALLION_GUEST_BUILT")) {
        // Wasmtime guards every indirect call with a Spectre mitigation, against hostile
        // code inside the sandbox training the CPU to read past a table. The module this
        // build made is not hostile, and what a job brings (SQL, tables, grants) is data,
        // not code; without the guard TPC-H Q1 ran 1-11% faster (median 4%) and Q6 3-5%
        // (interleaved runs). A module from elsewhere (`MEDALLION_GUEST`) keeps it.
        // SAFETY: the setting changes only what code may do speculatively; every table
        // access is still bounds-checked.
        unsafe {
            config.cranelift_flag_set("enable_table_access_spectre_mitigation", "false");
        }
    }
    // `perf record` can name the guest's functions only from a perf map of its JIT code.
    if std::env::var_os("MEDALLION_GUEST_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl Guest {
    /// Loads the guest module from the build's output (or `MEDALLION_GUEST`), compiling it
    /// only if the cache has no compiled copy. `timeouts`: whether jobs will have a time
    /// limit. Only then is the code compiled with epoch checks, which cost 13–15% of a
    /// query's time (TPC-H Q1 593 → 515 ms, Q6 160 → 143 ms without them); the two kinds
    /// are cached apart.
    pub fn load(timeouts: bool) -> Result<Self, GuestError> {
        Self::load_from(&module_path(), timeouts)
    }

    pub fn load_from(path: &std::path::Path, timeouts: bool) -> Result<Self, GuestError> {
        let err = |message: String| GuestError::Load {
            path: path.display().to_string(),
            message,
        };
        let started = Instant::now();
        let config = compile_config(path, timeouts);
        let engine = Engine::new(&config).map_err(|e| err(e.to_string()))?;
        let (module, cached) = cache::load(&engine, path).map_err(err)?;
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker).map_err(|e| err(e.to_string()))?;
        wasi::add_to_linker(&mut linker, &module).map_err(|e| err(e.to_string()))?;
        let ticking = Arc::new(AtomicBool::new(timeouts));
        if timeouts {
            let (weak, flag) = (engine.weak(), ticking.clone());
            std::thread::spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            });
        }
        Ok(Guest {
            engine,
            module,
            linker,
            load: LoadInfo {
                cached,
                ms: started.elapsed().as_secs_f64() * 1000.0,
            },
            ticking,
            timeouts,
        })
    }

    /// Runs one request in a fresh instance; `what` names the work in errors ("building
    /// table `x`"). Returns the answer's JSON line and the bytes after it. Blocks: call it
    /// from a thread that may block (not an async task).
    pub fn call(
        &self,
        ctx: &Context,
        what: &str,
        request: &[u8],
    ) -> Result<(serde_json::Value, Vec<u8>), GuestError> {
        let state = GuestState {
            storage: ctx.storage.clone(),
            grants: ctx.grants.clone(),
            runtime: ctx.runtime.clone(),
            clock: SystemClock::new(),
            started: Instant::now(),
            pending: Vec::new(),
            refused: None,
            written: Vec::new(),
            log: Vec::new(),
            progress: ctx.progress.clone(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed()),
            cap: MemoryCap {
                max: ctx.limits.max_memory,
                refused: None,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.cap);
        if self.timeouts {
            match ctx.limits.timeout {
                Some(limit) => {
                    let left = limit.saturating_sub(ctx.started.elapsed());
                    let ticks = left.as_millis() / EPOCH_TICK.as_millis();
                    store.set_epoch_deadline((ticks as u64).max(1));
                }
                None => store.set_epoch_deadline(u64::MAX / 2),
            }
            store.epoch_deadline_trap();
        } else if let Some(limit) = ctx.limits.timeout {
            // A limit nothing would enforce must not pass for one.
            return Err(GuestError::Failed {
                what: what.to_string(),
                message: format!(
                    "a {limit:?} time limit was asked of a guest module loaded without time limits (Guest::load(false))"
                ),
            });
        }

        let result = self.run(&mut store, request);
        let state = store.data();
        let failed = match &result {
            Err(_) => true,
            Ok(answer) => answer.starts_with(b"{\"error\"") || answer.is_empty(),
        };
        if failed {
            for location in &state.written {
                let _ = ctx.runtime.block_on(ctx.storage.delete(location));
            }
        }
        match result {
            Ok(answer) => {
                let split = answer
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(answer.len());
                let header: serde_json::Value =
                    serde_json::from_slice(&answer[..split]).map_err(|e| GuestError::Crashed {
                        what: what.to_string(),
                        message: format!("its answer is not valid JSON: {e}"),
                        log: String::from_utf8_lossy(&state.log).into_owned(),
                    })?;
                if let Some(message) = header.get("error").and_then(|m| m.as_str()) {
                    if let Some(refused) = &state.refused {
                        return Err(GuestError::Refused(format!("{what}: {refused}")));
                    }
                    return Err(GuestError::Failed {
                        what: what.to_string(),
                        message: message.to_string(),
                    });
                }
                let body = answer.get(split + 1..).unwrap_or_default().to_vec();
                Ok((header, body))
            }
            Err(e) => Err(self.explain(ctx, state, what, e)),
        }
    }

    fn run(&self, store: &mut Store<GuestState>, request: &[u8]) -> wasmtime::Result<Vec<u8>> {
        let instance = self.linker.instantiate(&mut *store, &self.module)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
            init.call(&mut *store, ())?;
        }
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
        // 2 MiB pages: TPC-H Q1 9% and the retail pipeline 4% faster (huge_pages.rs).
        huge_pages::advise(memory.data_ptr(&*store));
        let alloc: TypedFunc<u32, u32> = instance.get_typed_func(&mut *store, "medallion_alloc")?;
        let free: TypedFunc<(u32, u32), ()> =
            instance.get_typed_func(&mut *store, "medallion_free")?;
        let call: TypedFunc<(u32, u32), u64> =
            instance.get_typed_func(&mut *store, "medallion_call")?;
        let len = u32::try_from(request.len())
            .map_err(|_| wasmtime::Error::msg("the request is larger than 4 GiB"))?;
        let ptr = alloc.call(&mut *store, len)?;
        if ptr == 0 {
            return Err(wasmtime::Error::msg(format!(
                "the guest could not allocate {len} bytes for the request"
            )));
        }
        memory.write(&mut *store, ptr as usize, request)?;
        let packed = call.call(&mut *store, (ptr, len))?;
        let (out, out_len) = ((packed >> 32) as u32, packed as u32);
        if out == 0 {
            return Err(wasmtime::Error::msg(format!(
                "the guest could not allocate {out_len} bytes for its answer"
            )));
        }
        let mut answer = vec![0u8; out_len as usize];
        memory.read(&*store, out as usize, &mut answer)?;
        free.call(&mut *store, (out, out_len))?;
        Ok(answer)
    }

    /// What a trap or failed call means for the user.
    fn explain(
        &self,
        ctx: &Context,
        state: &GuestState,
        what: &str,
        e: wasmtime::Error,
    ) -> GuestError {
        if state.cap.refused.is_some() {
            return GuestError::Memory {
                cap: human_mib(ctx.limits.max_memory),
                what: what.to_string(),
            };
        }
        if let (Some(Trap::Interrupt), Some(limit)) = (e.downcast_ref::<Trap>(), ctx.limits.timeout)
        {
            return GuestError::Timeout {
                limit,
                what: what.to_string(),
            };
        }
        if let Some(refused) = &state.refused {
            return GuestError::Refused(format!("{what}: {refused}"));
        }
        GuestError::Crashed {
            what: what.to_string(),
            message: format!("{e:#}"),
            log: String::from_utf8_lossy(&state.log).into_owned(),
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{Hash, Hasher};

    /// What compiled code records of the engine's settings.
    fn settings(config: &Config) -> u64 {
        let engine = Engine::new(config).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    #[test]
    fn only_the_module_this_build_made_drops_the_spectre_guard() {
        let ours = std::path::Path::new(env!("MEDALLION_GUEST_BUILT"));
        let foreign = std::path::Path::new("/elsewhere/medallion_guest.wasm");
        for timeouts in [false, true] {
            let of = |path| settings(&compile_config(path, timeouts));
            assert_eq!(of(ours), of(ours));
            assert_ne!(of(ours), of(foreign));
            // A module from elsewhere gets wasmtime's defaults.
            assert_eq!(
                of(foreign),
                settings(Config::new().epoch_interruption(timeouts))
            );
        }
    }
}
