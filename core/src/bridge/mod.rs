//! The Send seam: DataFusion and parquet read through `ObjectStore` and `AsyncFileReader`,
//! whose futures must be `Send`; our [`Storage`](crate::storage::Storage) futures are not
//! `Send` on wasm32 (JS promises). This module is the only place that crosses between the two.
//!
//! On native targets `Storage` futures are already `Send` and pass straight through. On
//! wasm32 everything runs on the one JS thread, so `send_wrapper::SendWrapper` — which
//! checks at run time that a value never leaves the thread that made it — is sound there.

pub mod object_store;
pub mod parquet_reader;

use std::sync::Arc;

use crate::storage::Storage;

#[cfg(target_arch = "wasm32")]
pub(crate) type Shared = send_wrapper::SendWrapper<Arc<dyn Storage>>;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Shared = Arc<dyn Storage>;

pub(crate) fn share(storage: Arc<dyn Storage>) -> Shared {
    #[cfg(target_arch = "wasm32")]
    return send_wrapper::SendWrapper::new(storage);
    #[cfg(not(target_arch = "wasm32"))]
    return storage;
}

pub(crate) fn unshare(storage: &Shared) -> Arc<dyn Storage> {
    #[cfg(target_arch = "wasm32")]
    return (**storage).clone();
    #[cfg(not(target_arch = "wasm32"))]
    return storage.clone();
}

/// Makes a storage future `Send` for DataFusion (a no-op on native targets).
#[cfg(target_arch = "wasm32")]
pub(crate) fn seam<F: std::future::Future>(f: F) -> send_wrapper::SendWrapper<F> {
    send_wrapper::SendWrapper::new(f)
}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn seam<F: std::future::Future>(f: F) -> F {
    f
}
