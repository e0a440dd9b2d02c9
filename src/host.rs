//! Host calls without panics (wasm32-wasip1 only).
//!
//! The proxy-wasm SDK's `hostcalls::*` helpers panic on any status they do
//! not expect (`unexpected status`), and its header-map readers unwrap UTF-8
//! (`get_map`, `get_map_value`, and the names in `get_map_bytes`). One
//! header with a byte such as `\xe9` then traps the VM, and Envoy fails that
//! request and every request until the VM is reloaded. So the adapter makes
//! its host calls through this module: the raw ABI imports, every status
//! returned as an error, every buffer taken as bytes, and the serialised
//! header map parsed with bounds checks. The SDK is still used for what
//! does not read host data: the context dispatch (`proxy_wasm::main!`, the
//! traits) and the memory allocator the host calls back into.
//!
//! Statuses are plain `u32` here, not the SDK's `Status` enum, because a
//! host may return a code the enum does not list.

// The SDK declares the same imports with its own enum types; ours take the
// integers the ABI really passes.
#![allow(clashing_extern_declarations)]

use std::ptr::{null, null_mut};

/// `MapType` values of the ABI.
pub mod map {
    /// Request headers.
    pub const REQUEST_HEADERS: u32 = 0;
    /// Response headers.
    pub const RESPONSE_HEADERS: u32 = 2;
}

/// `BufferType::PluginConfiguration`.
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
/// `MetricType` values.
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;
/// `Status::Ok` and `Status::NotFound`.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// Log levels of the ABI.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Level {
    /// Informational.
    Info = 2,
    /// Something is wrong but the filter goes on.
    Warn = 3,
    /// Something is wrong and visible to users.
    Error = 4,
    /// The filter cannot go on.
    Critical = 5,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// Take ownership of a buffer the host allocated in our memory (through
/// the SDK's `proxy_on_memory_allocate`, which allocates a `Vec<u8>`).
///
/// # Safety
/// `data`/`size` must come from a successful host call that returned a
/// buffer: either null or a fresh allocation of exactly `size` bytes.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// Write a log line; a failure to log is ignored.
pub fn log(level: Level, message: &str) {
    // SAFETY: a valid pointer/length pair of a live &str.
    unsafe {
        let _ = proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// The proxy's wall clock in Unix seconds; 0 if the host cannot tell.
pub fn now_secs() -> u64 {
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t / 1_000_000_000
    } else {
        0
    }
}

/// The plugin configuration as bytes (`None` if the host refused).
pub fn plugin_configuration() -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers to locals; the buffer is ours on OK.
    unsafe {
        match proxy_get_buffer_bytes(
            BUFFER_PLUGIN_CONFIGURATION,
            0,
            usize::MAX,
            &mut data,
            &mut size,
        ) {
            OK => Some(take(data, size)),
            NOT_FOUND => Some(Vec::new()),
            _ => None,
        }
    }
}

/// A header map as the host serialises it (see [`crate::headermap`]);
/// `None` if the host refused.
pub fn header_map_bytes(map_type: u32) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-pointers to locals; the buffer is ours on OK.
    unsafe {
        if proxy_get_header_map_pairs(map_type, &mut data, &mut size) != OK {
            return None;
        }
        Some(take(data, size))
    }
}

/// One header's first value as bytes; `None` when absent or on error.
pub fn header(map_type: u32, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid key slice and out-pointers; the buffer is ours on OK.
    unsafe {
        match proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
        {
            OK => Some(take(data, size)),
            _ => None,
        }
    }
}

/// Set (replace) a header, or remove it with `None`. Errors are ignored:
/// the caller cannot do better than carry on.
pub fn set_header(map_type: u32, name: &str, value: Option<&[u8]>) {
    // SAFETY: valid slices for the duration of the call.
    unsafe {
        let _ = match value {
            Some(v) => proxy_replace_header_map_value(
                map_type,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()),
        };
    }
}

/// Add a header value (beside existing ones). Errors are ignored.
pub fn add_header(map_type: u32, name: &str, value: &[u8]) {
    // SAFETY: valid slices for the duration of the call.
    unsafe {
        let _ = proxy_add_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        );
    }
}

/// A property by path (`["xds", "route_name"]`) as bytes.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let mut serialised = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            serialised.push(0);
        }
        serialised.extend_from_slice(part.as_bytes());
    }
    property_at(&serialised)
}

/// A property by its serialised path (parts joined by NUL bytes, as in
/// `b"upstream\0address"`) as bytes: no allocation for the path.
pub fn property_at(serialised: &[u8]) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let ptr = if serialised.is_empty() {
        null()
    } else {
        serialised.as_ptr()
    };
    // SAFETY: valid path slice and out-pointers; the buffer is ours on OK.
    unsafe {
        match proxy_get_property(ptr, serialised.len(), &mut data, &mut size) {
            OK if !data.is_null() => Some(take(data, size)),
            _ => None,
        }
    }
}

/// Set a property: in Envoy, filter state `wasm.<path>` of the stream
/// (printable in access logs with `%FILTER_STATE(wasm.<path>:PLAIN)%`).
/// Errors are ignored.
pub fn set_property(path: &str, value: &[u8]) {
    // SAFETY: valid slices for the duration of the call.
    unsafe {
        let _ = proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len());
    }
}

/// A property by serialised path ([`property_at`]) as UTF-8 text; anything
/// else counts as absent.
pub fn property_text(serialised: &[u8]) -> Option<String> {
    String::from_utf8(property_at(serialised)?).ok()
}

/// A metric id; `None` if the host refused to define it.
pub fn define_counter(name: &str) -> Option<u32> {
    define(METRIC_COUNTER, name)
}

/// A gauge id; `None` if the host refused to define it.
pub fn define_gauge(name: &str) -> Option<u32> {
    define(METRIC_GAUGE, name)
}

fn define(kind: u32, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: valid name slice and out-pointer.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

/// Add 1 to a counter (ignored if it was never defined).
pub fn increment(id: Option<u32>) {
    if let Some(id) = id {
        // SAFETY: plain integers.
        unsafe {
            let _ = proxy_increment_metric(id, 1);
        }
    }
}

/// Set a gauge (ignored if it was never defined).
pub fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        // SAFETY: plain integers.
        unsafe {
            let _ = proxy_record_metric(id, value);
        }
    }
}

/// Ask the host to clear the route cache of the current request, so that
/// the router matches the route again on the headers just changed: Envoy's
/// foreign function `clear_route_cache` (Envoy 1.33+), called with no
/// arguments. `Err(status)` when the host does not have it (`NotFound`, 1)
/// or refused it; the caller decides what to do about that.
pub fn clear_route_cache() -> Result<(), u32> {
    const NAME: &str = "clear_route_cache";
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: a valid name slice, no arguments, out-pointers to locals; a
    // buffer the host returns on OK is ours.
    unsafe {
        match proxy_call_foreign_function(
            NAME.as_ptr(),
            NAME.len(),
            null(),
            0,
            &mut data,
            &mut size,
        ) {
            OK => {
                drop(take(data, size));
                Ok(())
            }
            status => Err(status),
        }
    }
}
