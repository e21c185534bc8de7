//! Compiled guest modules on disk. Compiling the guest (tens of MB of wasm) takes Cranelift
//! tens of seconds; loading a compiled copy takes milliseconds. A copy is keyed by the
//! module file (path, size, modification time) and by everything that makes compiled code
//! incompatible (wasmtime's version and settings, the CPU's features), so a rebuilt guest or
//! a new wasmtime compiles afresh. Stored in `$MEDALLION_GUEST_CACHE`, else
//! `~/.cache/medallion/guest/`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};

/// The module at `path`, from the cache if possible; `true` if it was.
pub fn load(engine: &Engine, path: &Path) -> Result<(Module, bool), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "{e}; build it with `cargo build -p medallion-host` (which builds the guest), \
             point MEDALLION_GUEST at a medallion_guest.wasm, or use --engine native"
        )
    })?;
    let cached =
        cache_dir().map(|dir| dir.join(format!("{:016x}.cwasm", key(engine, path, &meta))));
    // One compile at a time per module across processes (tests start many at once): the
    // others wait, then load what it wrote.
    let _lock = cached.as_ref().and_then(|file| {
        std::fs::create_dir_all(file.parent()?).ok()?;
        let lock = std::fs::File::create(file.with_extension("lock")).ok()?;
        lock.lock().ok()?;
        Some(lock)
    });
    if let Some(file) = &cached {
        if file.exists() {
            // SAFETY: the file was written by `Module::serialize` below, for this engine
            // configuration (part of the key); wasmtime checks its header and version too.
            if let Ok(module) = unsafe { Module::deserialize_file(engine, file) } {
                return Ok((module, true));
            }
        }
    }
    let module = Module::from_file(engine, path).map_err(|e| e.to_string())?;
    if let Some(file) = cached {
        // Best effort: a cache that cannot be written only costs the next start a compile.
        if let Ok(bytes) = module.serialize() {
            let _ = write_atomically(&file, &bytes);
        }
    }
    Ok((module, false))
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MEDALLION_GUEST_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(home.join("medallion").join("guest"))
}

fn key(engine: &Engine, path: &Path, meta: &std::fs::Metadata) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

/// Writes through a temporary file and a rename, so that concurrent runs never load half a
/// compiled module.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("module"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}
