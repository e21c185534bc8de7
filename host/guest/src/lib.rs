//! # medallion-guest — the core as a sandboxed WebAssembly guest
//!
//! This crate is `medallion-core` built for `wasm32-wasip1` as a WASI reactor, the module the
//! `medallion` CLI runs in wasmtime (see `host/src/guest/`). It has no I/O of its own: every
//! byte it reads or writes is asked of the host through the functions it imports from the
//! module `medallion`, and the host answers only for the paths and URLs the job granted.
//! The wire format between the two is written down in `ABI.md` next to this crate.
//!
//! A map:
//! - [`abi`]: the imported host functions, the exported entry points (`medallion_alloc`,
//!   `medallion_free`, `medallion_call`), and how buffers cross.
//! - [`host_storage`]: the core's `Storage` and `Clock` over those imports.
//! - [`memcmp`]: a word-at-a-time `memcmp` in place of wasi-libc's byte loop.
//! - [`request`]: the requests the host sends (stage tables of a pipeline, run a query) and
//!   what the guest answers.
//!
//! Natively the crate is empty: it exists only for `wasm32`.

#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

#[cfg(target_arch = "wasm32")]
pub mod abi;
#[cfg(target_arch = "wasm32")]
pub mod host_storage;
pub mod memcmp;
#[cfg(target_arch = "wasm32")]
pub mod request;
