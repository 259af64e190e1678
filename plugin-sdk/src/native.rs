//! Trusted native adapters: the same adapter source built as a native `cdylib` for vendors who
//! ship a library and users who accept running it unsandboxed (`llmb --allow-native`).
//!
//! The C ABI is versioned ([`ABI_VERSION`]) and small: an instance is an opaque pointer, and
//! every WIT function is one [`llmb_native_call`](crate::export_backend_native) with an
//! operation number and its arguments and result as postcard bytes of the WIT types. A panic
//! inside a call is caught here and returned as a failure of that call.

use std::collections::HashMap;
use std::ffi::c_void;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{FrameBatch, GenRequest, Guest, GuestResponseParser, Headers, Kv};

/// The version of this ABI; the host refuses a library reporting another. 2 since the
/// WIT types it carries gained 2.0's fields (a postcard encoding has no room for new ones).
pub const ABI_VERSION: u32 = 2;

/// Operation numbers of `llmb_native_call`.
pub mod op {
    pub const INFO: u32 = 0;
    pub const CONFIGURE: u32 = 1;
    pub const BUILD_REQUEST: u32 = 2;
    pub const NEW_PARSER: u32 = 3;
    pub const FEED: u32 = 4;
    pub const FINISH: u32 = 5;
    pub const DROP_PARSER: u32 = 6;
    pub const PARSE_BODY: u32 = 7;
    pub const TOKENIZE_REQUEST: u32 = 8;
    pub const PARSE_TOKENIZE: u32 = 9;
    pub const MAP_ERROR: u32 = 10;
}

/// `llmb_native_call` results.
pub mod status {
    pub const OK: i32 = 0;
    /// The input could not be decoded, or the operation is unknown; the output is a message.
    pub const BAD_CALL: i32 = 1;
    /// The adapter panicked; the output is the panic message.
    pub const PANIC: i32 = 2;
}

/// One native instance: the parsers it holds, by handle.
pub struct NativeState<T: Guest> {
    parsers: HashMap<u64, T::ResponseParser>,
    next: u64,
}

fn decode<A: DeserializeOwned>(input: &[u8]) -> Result<A, String> {
    postcard::from_bytes(input).map_err(|e| format!("undecodable arguments: {e}"))
}

fn encode<R: Serialize>(value: &R) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| format!("unencodable result: {e}"))
}

fn dispatch<T: Guest>(
    state: &mut NativeState<T>,
    op: u32,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    match op {
        op::INFO => encode(&T::info()),
        op::CONFIGURE => encode(&T::configure(decode::<Vec<Kv>>(input)?)),
        op::BUILD_REQUEST => encode(&T::build_request(decode::<GenRequest>(input)?)),
        op::NEW_PARSER => {
            let (status, headers): (u16, Headers) = decode(input)?;
            let handle = state.next;
            state.next += 1;
            state
                .parsers
                .insert(handle, T::ResponseParser::new(status, headers));
            encode(&handle)
        }
        op::FEED => {
            let (handle, batch) = decode_feed(input)?;
            let parser = state.parsers.get(&handle).ok_or("no such parser")?;
            encode(&parser.feed(batch))
        }
        op::FINISH => {
            let (handle, trailers): (u64, Headers) = decode(input)?;
            let parser = state.parsers.get(&handle).ok_or("no such parser")?;
            encode(&parser.finish(trailers))
        }
        op::DROP_PARSER => {
            state.parsers.remove(&decode::<u64>(input)?);
            encode(&())
        }
        op::PARSE_BODY => {
            let (status, headers, body): (u16, Headers, Vec<u8>) = decode(input)?;
            encode(&T::parse_body(status, headers, body))
        }
        op::TOKENIZE_REQUEST => encode(&T::tokenize_request(decode::<GenRequest>(input)?)),
        op::PARSE_TOKENIZE => encode(&T::parse_tokenize(decode::<Vec<u8>>(input)?)),
        op::MAP_ERROR => {
            let (status, headers, body): (u16, Headers, Vec<u8>) = decode(input)?;
            encode(&T::map_error(status, headers, body))
        }
        other => Err(format!("unknown operation {other}")),
    }
}

/// `feed`'s arguments, the hot path, laid out by hand (the frame bytes copied once rather than
/// serialized byte by byte): parser handle (u64 LE), frame count (u32 LE), per frame start,
/// length and event-name length (u32 LE; `u32::MAX` for none) and the event name, then the
/// frame bytes.
pub fn encode_feed<'a>(
    handle: u64,
    data: &[u8],
    frames: impl ExactSizeIterator<Item = (u32, u32, Option<&'a str>)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + frames.len() * 12 + data.len());
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for (start, len, event) in frames {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        match event {
            Some(name) => {
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    out.extend_from_slice(data);
    out
}

fn decode_feed(input: &[u8]) -> Result<(u64, FrameBatch), String> {
    let short = || "truncated feed arguments".to_string();
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let bytes = input.get(at..at + n).ok_or_else(short)?;
        at += n;
        Ok(bytes)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let handle = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    let count = u32_at(take(4)?) as usize;
    let mut frames = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let start = u32_at(take(4)?);
        let len = u32_at(take(4)?);
        let event = match u32_at(take(4)?) {
            u32::MAX => None,
            n => Some(
                String::from_utf8(take(n as usize)?.to_vec())
                    .map_err(|_| "an event name is not UTF-8".to_string())?,
            ),
        };
        frames.push(crate::backend::FrameSpan { start, len, event });
    }
    let data = input.get(at..).ok_or_else(short)?.to_vec();
    Ok((handle, FrameBatch { data, frames }))
}

#[doc(hidden)]
pub fn new_state<T: Guest>() -> *mut c_void {
    Box::into_raw(Box::new(NativeState::<T> {
        parsers: HashMap::new(),
        next: 1,
    }))
    .cast()
}

/// # Safety
/// `state` came from [`new_state`] for the same `T` and is not used afterwards.
#[doc(hidden)]
pub unsafe fn free_state<T: Guest>(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: per the contract above.
        drop(unsafe { Box::from_raw(state.cast::<NativeState<T>>()) });
    }
}

/// # Safety
/// `state` came from [`new_state`] for the same `T`; `input` points to `input_len` readable
/// bytes; `out` and `out_len` are writable. The output must go back through [`free_bytes`].
#[doc(hidden)]
pub unsafe fn call<T: Guest>(
    state: *mut c_void,
    op: u32,
    input: *const u8,
    input_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: per the contract above.
        let state = unsafe { &mut *state.cast::<NativeState<T>>() };
        let input = if input_len == 0 {
            &[][..]
        } else {
            // SAFETY: per the contract above.
            unsafe { std::slice::from_raw_parts(input, input_len) }
        };
        dispatch(state, op, input)
    }));
    let (code, bytes) = match outcome {
        Ok(Ok(bytes)) => (status::OK, bytes),
        Ok(Err(message)) => (status::BAD_CALL, message.into_bytes()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            (status::PANIC, message.into_bytes())
        }
    };
    let boxed = bytes.into_boxed_slice();
    // SAFETY: per the contract above.
    unsafe {
        *out_len = boxed.len();
        *out = Box::into_raw(boxed).cast::<u8>();
    }
    code
}

/// # Safety
/// `ptr` and `len` are an output of [`call`], freed once.
#[doc(hidden)]
pub unsafe fn free_bytes(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: per the contract above: a boxed slice of `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

/// Exports an adapter type as a trusted native library (build the crate for the host's
/// target as a `cdylib`); next to `export_backend!` for the WASM build:
///
/// ```ignore
/// #[cfg(target_arch = "wasm32")]
/// llmb_plugin_sdk::export_backend!(Adapter);
/// #[cfg(not(target_arch = "wasm32"))]
/// llmb_plugin_sdk::export_backend_native!(Adapter);
/// ```
#[macro_export]
macro_rules! export_backend_native {
    ($ty:ty) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn llmb_native_abi_version() -> u32 {
            $crate::native::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn llmb_native_new() -> *mut ::core::ffi::c_void {
            $crate::native::new_state::<$ty>()
        }

        /// # Safety
        /// See `llmb_plugin_sdk::native::free_state`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn llmb_native_free(state: *mut ::core::ffi::c_void) {
            unsafe { $crate::native::free_state::<$ty>(state) }
        }

        /// # Safety
        /// See `llmb_plugin_sdk::native::call`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn llmb_native_call(
            state: *mut ::core::ffi::c_void,
            op: u32,
            input: *const u8,
            input_len: usize,
            out: *mut *mut u8,
            out_len: *mut usize,
        ) -> i32 {
            unsafe { $crate::native::call::<$ty>(state, op, input, input_len, out, out_len) }
        }

        /// # Safety
        /// See `llmb_plugin_sdk::native::free_bytes`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn llmb_native_free_bytes(ptr: *mut u8, len: usize) {
            unsafe { $crate::native::free_bytes(ptr, len) }
        }
    };
}
