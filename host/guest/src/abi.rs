//! The boundary with the host: imported functions, exported entry points, buffers.
//!
//! Buffers cross through guest memory only. The host copies a request into a buffer it gets
//! from [`medallion_alloc`]; the guest answers with a buffer whose address and length
//! [`medallion_call`] returns packed in one `u64` (high 32 bits: address, low: length), which
//! the host frees with [`medallion_free`] after copying. For reads the guest allocates the
//! destination and the host writes the bytes straight into it (one copy, of exactly the
//! range asked for). Answers of unknown size (metadata, listings, error messages) wait on the
//! host side until the guest fetches them with `take`.

use std::alloc::{alloc, dealloc, Layout};

/// Status codes the host functions return instead of a length or count.
pub mod status {
    /// The object does not exist.
    pub const NOT_FOUND: i64 = -1;
    /// `put_if_absent` found the object already there.
    pub const ALREADY_EXISTS: i64 = -2;
    /// Any other failure; `take` returns its message.
    pub const ERROR: i64 = -3;
    /// The job was not granted the path or URL; `take` returns the host's message.
    pub const REFUSED: i64 = -4;
}

#[link(wasm_import_module = "medallion")]
extern "C" {
    /// Size and version of an object: returns the length of its JSON `ObjectMeta` (to
    /// `take`), or a status.
    pub fn head(loc: *const u8, loc_len: u32) -> i64;
    /// Writes bytes `start..end` of an object to `dst` (which has room for them): returns
    /// the number written, always `end - start`, or a status.
    pub fn read_range(loc: *const u8, loc_len: u32, start: u64, end: u64, dst: *mut u8) -> i64;
    /// Writes the last `n` bytes of an object (all of it if smaller) to `dst`: returns the
    /// number written, or a status. The object's JSON `ObjectMeta` is then ready to `take`.
    pub fn read_suffix(loc: *const u8, loc_len: u32, n: u64, dst: *mut u8) -> i64;
    /// Every object below a directory: returns the length of a JSON array of `ObjectMeta`
    /// (to `take`), or a status.
    pub fn list(prefix: *const u8, prefix_len: u32) -> i64;
    /// Writes an object: returns 0 or a status.
    pub fn put(loc: *const u8, loc_len: u32, data: *const u8, data_len: u32) -> i64;
    /// Writes an object if none exists, atomically: returns 0, `ALREADY_EXISTS` or a status.
    pub fn put_if_absent(loc: *const u8, loc_len: u32, data: *const u8, data_len: u32) -> i64;
    /// Removes an object (a missing one is not an error): returns 0 or a status.
    pub fn delete(loc: *const u8, loc_len: u32) -> i64;
    /// Copies the host's pending answer to `dst` if it fits in `cap` bytes; returns its
    /// length either way (call again with a larger buffer if it did not fit).
    pub fn take(dst: *mut u8, cap: u32) -> i64;
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> i64;
    /// A monotonic clock in milliseconds.
    pub fn monotonic_ms() -> f64;
    /// A progress event (JSON), for the host's display.
    pub fn progress(event: *const u8, event_len: u32);
}

/// The host's pending answer (see `take`).
pub fn take_pending() -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { take(buf.as_mut_ptr(), buf.len() as u32) } as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return buf;
        }
        buf = vec![0u8; n];
    }
}

/// A buffer of `len` bytes for the host to fill (a request). A zero-length request still gets
/// a valid address; null means the guest cannot hold that many bytes (the host reports it).
#[no_mangle]
pub extern "C" fn medallion_alloc(len: u32) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(len.max(1) as usize, 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    unsafe { alloc(layout) }
}

/// Frees a buffer from [`medallion_alloc`] or an answer of [`medallion_call`].
///
/// # Safety
/// `ptr` and `len` must be one such buffer, freed once.
#[no_mangle]
pub unsafe extern "C" fn medallion_free(ptr: *mut u8, len: u32) {
    // A buffer from medallion_alloc always had a valid layout; anything else is not ours.
    if let (false, Ok(layout)) = (
        ptr.is_null(),
        Layout::from_size_align(len.max(1) as usize, 1),
    ) {
        dealloc(ptr, layout);
    }
}

/// Handles one request (JSON, in a buffer from [`medallion_alloc`] that the guest now owns)
/// and returns the answer's address and length packed into a `u64`.
///
/// # Safety
/// `ptr` and `len` must be a buffer from [`medallion_alloc`] holding the request.
#[no_mangle]
pub unsafe extern "C" fn medallion_call(ptr: *mut u8, len: u32) -> u64 {
    let request = std::slice::from_raw_parts(ptr, len as usize).to_vec();
    medallion_free(ptr, len);
    let answer = crate::request::handle(&request);
    let len = answer.len() as u32;
    let out = medallion_alloc(len);
    if out.is_null() {
        // The host reads a null address with a length as "the answer did not fit".
        return len as u64;
    }
    std::ptr::copy_nonoverlapping(answer.as_ptr(), out, answer.len());
    ((out as u32 as u64) << 32) | len as u64
}
