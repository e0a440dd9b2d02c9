//! Host-call probe for the benchmark (tests/bench/run.py).
//!
//! The plugin configuration is a `|`-separated list of operations run on
//! every request, in order:
//!
//! - `map`: read the whole request header map (`get_http_request_headers`)
//! - `get:NAME`: read one request header
//! - `set:NAME=VALUE`: set one request header
//! - `time`: read the clock
//! - `metric:NAME`: increment a counter
//! - `property:a.b`: read a property (path split on `.`)
//! - `resp_add:NAME=VALUE`: add a response header (response phase)
//! - `rawmap`: read the request header map's bytes, unparsed
//! - `del:NAME`: remove one request header
//! - `rand`: read 16 random bytes (WASI `random_get`)
//! - `resp_map`: read the response header map's bytes (response phase)
//! - `resp_prop:a.b`: read a property in the response phase (`upstream.address`)
//! - `clear`: call Envoy's `clear_route_cache` foreign function (the filter
//!   makes this call after changing request headers)
//!
//! An empty configuration makes an empty filter: Envoy still calls into the
//! VM for every request and response, the filter does nothing.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::rc::Rc;

enum Op {
    Map,
    Get(String),
    Set(String, String),
    Time,
    Metric(u32),
    Property(Vec<String>),
    RespAdd(String, String),
    RawMap,
    Del(String),
    Rand,
    RespMap,
    RespProp(Vec<String>),
    Clear,
}

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

/// The map's serialised bytes, unparsed (the host allocates them).
fn raw_map(map_type: u32) -> usize {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: out-pointers to locals; on success the buffer is ours.
    unsafe {
        if proxy_get_header_map_pairs(map_type, &mut data, &mut size) != 0 || data.is_null() {
            return 0;
        }
        drop(Vec::from_raw_parts(data, size, size));
    }
    size
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { ops: Rc::new(Vec::new()) }) });
}}

struct Root {
    ops: Rc<Vec<Op>>,
}

impl Context for Root {}

fn pair(arg: &str) -> (String, String) {
    let (k, v) = arg.split_once('=').unwrap_or((arg, "x"));
    (k.to_owned(), v.to_owned())
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let cfg = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8(cfg).unwrap_or_default();
        let mut ops = Vec::new();
        for item in text.split('|').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, arg) = item.split_once(':').unwrap_or((item, ""));
            ops.push(match kind {
                "map" => Op::Map,
                "get" => Op::Get(arg.to_owned()),
                "set" => {
                    let (k, v) = pair(arg);
                    Op::Set(k, v)
                }
                "time" => Op::Time,
                "metric" => {
                    Op::Metric(hostcalls::define_metric(MetricType::Counter, arg).unwrap_or(0))
                }
                "property" => Op::Property(arg.split('.').map(str::to_owned).collect()),
                "resp_add" => {
                    let (k, v) = pair(arg);
                    Op::RespAdd(k, v)
                }
                "rawmap" => Op::RawMap,
                "del" => Op::Del(arg.to_owned()),
                "rand" => Op::Rand,
                "resp_map" => Op::RespMap,
                "resp_prop" => Op::RespProp(arg.split('.').map(str::to_owned).collect()),
                "clear" => Op::Clear,
                _ => return false,
            });
        }
        self.ops = Rc::new(ops);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            ops: self.ops.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    ops: Rc<Vec<Op>>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut n = 0usize;
        for op in self.ops.iter() {
            match op {
                Op::Map => {
                    n += hostcalls::get_map(MapType::HttpRequestHeaders).map_or(0, |m| m.len())
                }
                Op::Get(k) => {
                    n += hostcalls::get_map_value(MapType::HttpRequestHeaders, k)
                        .ok()
                        .flatten()
                        .map_or(0, |v| v.len())
                }
                Op::Set(k, v) => {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, k, Some(v));
                }
                Op::Time => n += hostcalls::get_current_time().map_or(0, |_| 1),
                Op::Metric(id) => {
                    let _ = hostcalls::increment_metric(*id, 1);
                }
                Op::Property(p) => {
                    n += hostcalls::get_property(p.iter().map(String::as_str).collect())
                        .ok()
                        .flatten()
                        .map_or(0, |v| v.len())
                }
                Op::RawMap => n += raw_map(0),
                Op::Del(k) => {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, k, None);
                }
                Op::Rand => {
                    let mut b = [0u8; 16];
                    n += getrandom_16(&mut b);
                }
                Op::Clear => {
                    n += usize::from(
                        hostcalls::call_foreign_function("clear_route_cache", None).is_ok(),
                    )
                }
                Op::RespAdd(..) | Op::RespMap | Op::RespProp(_) => {}
            }
        }
        std::hint::black_box(n);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for op in self.ops.iter() {
            match op {
                Op::RespAdd(k, v) => {
                    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, k, v);
                }
                Op::RespMap => {
                    std::hint::black_box(raw_map(2));
                }
                Op::RespProp(p) => {
                    let v = hostcalls::get_property(p.iter().map(String::as_str).collect());
                    std::hint::black_box(v.ok().flatten().map_or(0, |v| v.len()));
                }
                _ => {}
            }
        }
        Action::Continue
    }
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

fn getrandom_16(b: &mut [u8; 16]) -> usize {
    // SAFETY: a valid buffer of the given length.
    usize::from(unsafe { random_get(b.as_mut_ptr(), b.len()) } == 0)
}

// Nothing unless built with BENCH_PROBE_PAD=N (build.rs): exported
// functions nobody calls, the padding of the memory-against-size curve.
include!(concat!(env!("OUT_DIR"), "/pad.rs"));
