//! The host half of the guest ABI (see `host/guest/ABI.md`): the functions of the import
//! module `medallion`, each checked against the job's [`Grants`](super::grants::Grants)
//! and served by the native storage.

use std::ops::Range;

use bytes::Bytes;
use medallion_core::storage::{is_url, ObjectMeta};
use medallion_core::Error;
use serde_json::json;
use wasmtime::{Caller, Linker, Memory};

use super::GuestState;

const MODULE: &str = "medallion";

/// Status codes, as in the guest's `abi::status`.
const NOT_FOUND: i64 = -1;
const ALREADY_EXISTS: i64 = -2;
const ERROR: i64 = -3;
const REFUSED: i64 = -4;

/// The guest's linear memory.
pub fn memory(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(wasmtime::Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the guest exports no memory")),
    }
}

/// A string the guest passed as (address, length).
fn guest_str(caller: &mut Caller<'_, GuestState>, ptr: u32, len: u32) -> wasmtime::Result<String> {
    let mem = memory(caller)?;
    let bytes = mem
        .data(&*caller)
        .get(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| wasmtime::Error::msg("the guest passed a string outside its memory"))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn guest_bytes(caller: &mut Caller<'_, GuestState>, ptr: u32, len: u32) -> wasmtime::Result<Bytes> {
    let mem = memory(caller)?;
    let bytes = mem
        .data(&*caller)
        .get(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| wasmtime::Error::msg("the guest passed a buffer outside its memory"))?;
    Ok(Bytes::copy_from_slice(bytes))
}

/// Writes `bytes` at `dst` in guest memory.
fn put_guest(caller: &mut Caller<'_, GuestState>, dst: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, dst as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("the guest's buffer is outside its memory"))
}

fn meta_json(m: &ObjectMeta) -> serde_json::Value {
    json!({
        "location": m.location,
        "size": m.size,
        "last_modified_ms": m.last_modified_ms,
        "etag": m.etag,
    })
}

/// An error as a status, its message left pending for `take`.
fn fail(state: &mut GuestState, e: Error) -> i64 {
    match e {
        Error::NotFound { .. } => NOT_FOUND,
        Error::AlreadyExists { .. } => ALREADY_EXISTS,
        other => {
            // The guest names the location (and range) it asked for; the host adds only why.
            state.pending = match other {
                Error::Io { message, .. } | Error::Location { message, .. } => message,
                other => other.to_string(),
            }
            .into_bytes();
            ERROR
        }
    }
}

/// Checks the grants; a refusal is remembered (the run's error names it) and left pending.
fn granted(state: &mut GuestState, location: &str, write: bool) -> bool {
    match state.grants.check(location, write) {
        Ok(()) => true,
        Err(refused) => {
            let message = refused.to_string();
            state.pending = message.clone().into_bytes();
            state.refused.get_or_insert(message);
            false
        }
    }
}

/// Adds the `medallion` functions to `linker`.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "head", head)?;
    linker.func_wrap(MODULE, "read_range", read_range)?;
    linker.func_wrap(MODULE, "read_suffix", read_suffix)?;
    linker.func_wrap(MODULE, "list", list)?;
    linker.func_wrap(
        MODULE,
        "put",
        |c: Caller<'_, GuestState>, l: u32, ll: u32, d: u32, dl: u32| put(c, l, ll, d, dl, false),
    )?;
    linker.func_wrap(
        MODULE,
        "put_if_absent",
        |c: Caller<'_, GuestState>, l: u32, ll: u32, d: u32, dl: u32| put(c, l, ll, d, dl, true),
    )?;
    linker.func_wrap(MODULE, "delete", delete)?;
    linker.func_wrap(MODULE, "take", take)?;
    linker.func_wrap(MODULE, "now_ms", |c: Caller<'_, GuestState>| {
        use medallion_core::clock::Clock;
        c.data().clock.now_ms()
    })?;
    linker.func_wrap(MODULE, "monotonic_ms", |c: Caller<'_, GuestState>| {
        c.data().started.elapsed().as_secs_f64() * 1000.0
    })?;
    linker.func_wrap(MODULE, "progress", progress)?;
    Ok(())
}

fn head(mut caller: Caller<'_, GuestState>, loc: u32, loc_len: u32) -> wasmtime::Result<i64> {
    let location = guest_str(&mut caller, loc, loc_len)?;
    let state = caller.data_mut();
    if !granted(state, &location, false) {
        return Ok(REFUSED);
    }
    let storage = state.storage.clone();
    match state.runtime.block_on(storage.head(&location)) {
        Ok(m) => {
            state.pending = meta_json(&m).to_string().into_bytes();
            Ok(state.pending.len() as i64)
        }
        Err(e) => Ok(fail(state, e)),
    }
}

fn read_range(
    mut caller: Caller<'_, GuestState>,
    loc: u32,
    loc_len: u32,
    start: u64,
    end: u64,
    dst: u32,
) -> wasmtime::Result<i64> {
    let location = guest_str(&mut caller, loc, loc_len)?;
    if !granted(caller.data_mut(), &location, false) {
        return Ok(REFUSED);
    }
    if !is_url(&location) {
        // Local files are read straight into the guest's buffer: no copy on the way.
        return Ok(
            match read_local_into(&mut caller, &location, start..end, dst) {
                Ok(n) => n as i64,
                Err(e) => fail(caller.data_mut(), e),
            },
        );
    }
    let state = caller.data_mut();
    let storage = state.storage.clone();
    match state
        .runtime
        .block_on(storage.read_range(&location, start..end))
    {
        Ok(bytes) => {
            put_guest(&mut caller, dst, &bytes)?;
            Ok(bytes.len() as i64)
        }
        Err(e) => Ok(fail(caller.data_mut(), e)),
    }
}

/// `pread` of `range` of a local file into guest memory at `dst`.
fn read_local_into(
    caller: &mut Caller<'_, GuestState>,
    location: &str,
    range: Range<u64>,
    dst: u32,
) -> Result<usize, Error> {
    use std::os::unix::fs::FileExt;
    let io = |message: String| Error::Io {
        location: location.to_string(),
        range: Some(range.clone()),
        message,
    };
    let file = std::fs::File::open(location).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            location: location.to_string(),
        },
        _ => io(e.to_string()),
    })?;
    let len = range.end.saturating_sub(range.start) as usize;
    let mem = memory(caller).map_err(|e| io(e.to_string()))?;
    let buf = mem
        .data_mut(&mut *caller)
        .get_mut(dst as usize..dst as usize + len)
        .ok_or_else(|| io("the guest's buffer is outside its memory".into()))?;
    file.read_exact_at(buf, range.start)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => io("the file is shorter than the range".into()),
            _ => io(e.to_string()),
        })?;
    Ok(len)
}

fn read_suffix(
    mut caller: Caller<'_, GuestState>,
    loc: u32,
    loc_len: u32,
    n: u64,
    dst: u32,
) -> wasmtime::Result<i64> {
    let location = guest_str(&mut caller, loc, loc_len)?;
    let state = caller.data_mut();
    if !granted(state, &location, false) {
        return Ok(REFUSED);
    }
    let storage = state.storage.clone();
    match state.runtime.block_on(storage.read_suffix(&location, n)) {
        Ok((bytes, meta)) => {
            put_guest(&mut caller, dst, &bytes)?;
            caller.data_mut().pending = meta_json(&meta).to_string().into_bytes();
            Ok(bytes.len() as i64)
        }
        Err(e) => Ok(fail(caller.data_mut(), e)),
    }
}

fn list(mut caller: Caller<'_, GuestState>, prefix: u32, len: u32) -> wasmtime::Result<i64> {
    let prefix = guest_str(&mut caller, prefix, len)?;
    let state = caller.data_mut();
    if !granted(state, &prefix, false) {
        return Ok(REFUSED);
    }
    let storage = state.storage.clone();
    match state.runtime.block_on(storage.list(&prefix)) {
        Ok(metas) => {
            let all: Vec<serde_json::Value> = metas.iter().map(meta_json).collect();
            state.pending = serde_json::Value::from(all).to_string().into_bytes();
            Ok(state.pending.len() as i64)
        }
        Err(e) => Ok(fail(state, e)),
    }
}

fn put(
    mut caller: Caller<'_, GuestState>,
    loc: u32,
    loc_len: u32,
    data: u32,
    data_len: u32,
    if_absent: bool,
) -> wasmtime::Result<i64> {
    let location = guest_str(&mut caller, loc, loc_len)?;
    if !granted(caller.data_mut(), &location, true) {
        return Ok(REFUSED);
    }
    let bytes = guest_bytes(&mut caller, data, data_len)?;
    let state = caller.data_mut();
    let storage = state.storage.clone();
    let result = state.runtime.block_on(async {
        if if_absent {
            storage.put_if_absent(&location, bytes).await
        } else {
            storage.put(&location, bytes).await
        }
    });
    Ok(match result {
        Ok(()) => {
            state.written.push(location);
            0
        }
        Err(e) => fail(state, e),
    })
}

fn delete(mut caller: Caller<'_, GuestState>, loc: u32, loc_len: u32) -> wasmtime::Result<i64> {
    let location = guest_str(&mut caller, loc, loc_len)?;
    let state = caller.data_mut();
    if !granted(state, &location, true) {
        return Ok(REFUSED);
    }
    let storage = state.storage.clone();
    Ok(match state.runtime.block_on(storage.delete(&location)) {
        Ok(()) => 0,
        Err(e) => fail(state, e),
    })
}

fn take(mut caller: Caller<'_, GuestState>, dst: u32, cap: u32) -> wasmtime::Result<i64> {
    let pending = std::mem::take(&mut caller.data_mut().pending);
    let n = pending.len() as i64;
    if pending.len() <= cap as usize {
        put_guest(&mut caller, dst, &pending)?;
    } else {
        caller.data_mut().pending = pending;
    }
    Ok(n)
}

fn progress(mut caller: Caller<'_, GuestState>, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let event = guest_str(&mut caller, ptr, len)?;
    if let Ok(event) = serde_json::from_str(&event) {
        (caller.data().progress)(&event);
    }
    Ok(())
}
