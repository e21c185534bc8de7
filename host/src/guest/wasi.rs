//! The few WASI preview 1 calls the guest's Rust standard library makes, served without a
//! file system, network, environment or arguments: clocks, random bytes, and stdout/stderr
//! (kept as the guest's log, shown when it fails). Every other WASI import traps with its
//! name, so a guest that starts needing more fails loudly instead of misbehaving.
//!
//! Why not `wasmtime-wasi`: it brings a virtual file system, sockets and tokio features the
//! guest must not have (its I/O goes through the `medallion` imports and their grants), and
//! a second, larger async stack to build.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::{Caller, Linker, Module};

use super::abi::memory;
use super::GuestState;

const MODULE: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;
/// Guest output kept for error messages; older output is dropped.
const LOG_LIMIT: usize = 64 * 1024;

/// The guest called `proc_exit`.
#[derive(Debug, thiserror::Error)]
#[error("the guest exited with status {0}")]
pub struct Exit(pub i32);

/// Adds the WASI functions to `linker`; the module's other WASI imports trap when called.
pub fn add_to_linker(linker: &mut Linker<GuestState>, module: &Module) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "args_sizes_get", sizes_none)?;
    linker.func_wrap(MODULE, "environ_sizes_get", sizes_none)?;
    linker.func_wrap(MODULE, "args_get", |_: i32, _: i32| ERRNO_SUCCESS)?;
    linker.func_wrap(MODULE, "environ_get", |_: i32, _: i32| ERRNO_SUCCESS)?;
    linker.func_wrap(MODULE, "clock_res_get", clock_res_get)?;
    linker.func_wrap(MODULE, "clock_time_get", clock_time_get)?;
    linker.func_wrap(MODULE, "random_get", random_get)?;
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(MODULE, "sched_yield", || ERRNO_SUCCESS)?;
    linker.func_wrap(MODULE, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(Exit(code)))
    })?;
    // No file descriptors besides stdout and stderr: "bad descriptor" is the honest answer,
    // and the one the standard library expects when there are no preopened folders.
    linker.func_wrap(MODULE, "fd_prestat_get", |_: i32, _: i32| ERRNO_BADF)?;
    linker.func_wrap(MODULE, "fd_prestat_dir_name", |_: i32, _: i32, _: i32| {
        ERRNO_BADF
    })?;
    linker.func_wrap(MODULE, "fd_close", |_: i32| ERRNO_BADF)?;
    linker.func_wrap(MODULE, "fd_fdstat_get", |_: i32, _: i32| ERRNO_BADF)?;
    linker.func_wrap(MODULE, "fd_seek", |_: i32, _: i64, _: i32, _: i32| {
        ERRNO_BADF
    })?;
    linker.func_wrap(MODULE, "fd_read", |_: i32, _: i32, _: i32, _: i32| {
        ERRNO_BADF
    })?;
    linker.func_wrap(MODULE, "poll_oneoff", |_: i32, _: i32, _: i32, _: i32| {
        ERRNO_NOSYS
    })?;
    linker.define_unknown_imports_as_traps(module)?;
    Ok(())
}

fn sizes_none(mut caller: Caller<'_, GuestState>, count: i32, size: i32) -> i32 {
    write_u32s(&mut caller, &[(count, 0), (size, 0)])
}

fn write_u32s(caller: &mut Caller<'_, GuestState>, values: &[(i32, u32)]) -> i32 {
    let Ok(mem) = memory(caller) else {
        return ERRNO_INVAL;
    };
    for (ptr, v) in values {
        if mem
            .write(&mut *caller, *ptr as u32 as usize, &v.to_le_bytes())
            .is_err()
        {
            return ERRNO_INVAL;
        }
    }
    ERRNO_SUCCESS
}

fn clock_res_get(mut caller: Caller<'_, GuestState>, _id: i32, ptr: i32) -> i32 {
    let Ok(mem) = memory(&mut caller) else {
        return ERRNO_INVAL;
    };
    match mem.write(&mut caller, ptr as u32 as usize, &1000u64.to_le_bytes()) {
        Ok(()) => ERRNO_SUCCESS,
        Err(_) => ERRNO_INVAL,
    }
}

fn clock_time_get(mut caller: Caller<'_, GuestState>, id: i32, _precision: i64, ptr: i32) -> i32 {
    let ns: u64 = match id {
        // Realtime.
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        // Monotonic, process and thread CPU time: time since the instance started.
        _ => caller.data().started.elapsed().as_nanos() as u64,
    };
    let Ok(mem) = memory(&mut caller) else {
        return ERRNO_INVAL;
    };
    match mem.write(&mut caller, ptr as u32 as usize, &ns.to_le_bytes()) {
        Ok(()) => ERRNO_SUCCESS,
        Err(_) => ERRNO_INVAL,
    }
}

fn random_get(mut caller: Caller<'_, GuestState>, ptr: i32, len: i32) -> i32 {
    let Ok(mem) = memory(&mut caller) else {
        return ERRNO_INVAL;
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let (data, state) = mem.data_and_store_mut(&mut caller);
    match data.get_mut(start..start + len) {
        Some(buf) => {
            state.rng.fill_bytes(buf);
            ERRNO_SUCCESS
        }
        None => ERRNO_INVAL,
    }
}

fn fd_write(mut caller: Caller<'_, GuestState>, fd: i32, iovs: i32, n: i32, written: i32) -> i32 {
    if fd != 1 && fd != 2 {
        return ERRNO_BADF;
    }
    let Ok(mem) = memory(&mut caller) else {
        return ERRNO_INVAL;
    };
    let mut out = Vec::new();
    {
        let data = mem.data(&caller);
        for i in 0..n as u32 as usize {
            let at = iovs as u32 as usize + i * 8;
            let Some(iov) = data.get(at..at + 8) else {
                return ERRNO_INVAL;
            };
            let ptr = u32::from_le_bytes(iov[0..4].try_into().unwrap_or_default()) as usize;
            let len = u32::from_le_bytes(iov[4..8].try_into().unwrap_or_default()) as usize;
            let Some(bytes) = data.get(ptr..ptr + len) else {
                return ERRNO_INVAL;
            };
            out.extend_from_slice(bytes);
        }
    }
    let total = out.len() as u32;
    let log = &mut caller.data_mut().log;
    log.extend_from_slice(&out);
    if log.len() > LOG_LIMIT {
        let cut = log.len() - LOG_LIMIT;
        log.drain(..cut);
    }
    if std::env::var_os("MEDALLION_GUEST_LOG").is_some() {
        eprint!("{}", String::from_utf8_lossy(&out));
    }
    write_u32s(&mut caller, &[(written, total)])
}
