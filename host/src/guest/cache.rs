//! Compiled guest modules on disk. Compiling the guest (tens of MB of wasm) takes Cranelift
//! tens of seconds; loading a compiled copy takes milliseconds. A copy is keyed by the
//! module file (path, size, modification time) and by everything that makes compiled code
//! incompatible (wasmtime's version and settings, the CPU's features), so a rebuilt guest or
//! a new wasmtime compiles afresh. Stored in `$MEDALLION_GUEST_CACHE`, else
//! `~/.cache/medallion/guest/`, which keeps the copies used last ([`KEPT`]).

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
                mark_used(file);
                return Ok((module, true));
            }
        }
    }
    let module = Module::from_file(engine, path).map_err(|e| e.to_string())?;
    if let Some(file) = cached {
        // Best effort: a cache that cannot be written only costs the next start a compile.
        if let Ok(bytes) = module.serialize() {
            if write_atomically(&file, &bytes).is_ok() {
                if let Some(dir) = file.parent() {
                    prune(dir, KEPT);
                }
            }
        }
    }
    Ok((module, false))
}

/// Compiled copies kept: each is 150-170 MB, and every rebuilt guest makes a new one, so a
/// developer's cache grew to 12 GB. Six cover what one checkout uses (release and debug
/// guests, each with and without time limits) with room for a second build.
const KEPT: usize = 6;

/// Records a use of `file` in its modification time, which [`prune`] orders by (access
/// times are often not kept). Best effort.
fn mark_used(file: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes all but the `keep` compiled copies in `dir` used last, with their lock files.
/// Safe while other processes run: one that has a removed copy mapped keeps its pages, and
/// one about to load it finds it gone and compiles afresh.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    copies.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, old) in copies.into_iter().skip(keep) {
        let _ = std::fs::remove_file(&old);
        let _ = std::fs::remove_file(old.with_extension("lock"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prune_keeps_the_copies_used_last_and_nothing_else_goes() {
        let dir = tempfile::tempdir().unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let copy = |i: u64| dir.path().join(format!("{i:016x}.cwasm"));
        for i in 0..8 {
            std::fs::write(copy(i), b"compiled").unwrap();
            std::fs::write(copy(i).with_extension("lock"), b"").unwrap();
            let f = std::fs::File::options().append(true).open(copy(i)).unwrap();
            f.set_modified(start + Duration::from_secs(i * 60)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"not a copy").unwrap();
        // The oldest copy was loaded just now: it counts as used last.
        mark_used(&copy(0));
        prune(dir.path(), 6);
        let left = |i| copy(i).exists();
        assert!(left(0), "a copy loaded just now was removed");
        assert!(
            !left(1) && !left(2),
            "the two copies used least are still there"
        );
        assert!((3..8).all(left), "a copy used recently was removed");
        assert!(!copy(1).with_extension("lock").exists());
        assert!(copy(3).with_extension("lock").exists());
        assert!(dir.path().join("notes.txt").exists());
    }
}
