//! Trusted native adapters (`--allow-native`): a backend adapter built with plugin-sdk as a
//! native library (`export_backend_native!`), loaded with `libloading` and called through the
//! SDK's versioned C ABI. It runs unsandboxed, with the user's rights and no time or memory
//! limit; a panic inside a call is caught on its side of the boundary and fails the request.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, ensure};
use llmb_plugin_sdk::native::{ABI_VERSION, status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::PluginFault;

type NewFn = unsafe extern "C" fn() -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallFn =
    unsafe extern "C" fn(*mut c_void, u32, *const u8, usize, *mut *mut u8, *mut usize) -> i32;
type FreeBytesFn = unsafe extern "C" fn(*mut u8, usize);

/// A loaded native adapter library.
pub struct NativeLibrary {
    new: NewFn,
    free: FreeFn,
    call: CallFn,
    free_bytes: FreeBytesFn,
    pub path: PathBuf,
    /// Kept last: the functions above point into it.
    _library: libloading::Library,
}

/// Whether `bytes` start like a native shared library (ELF, Mach-O or PE) rather than Wasm.
pub fn is_native_library(path: &Path, bytes: &[u8]) -> bool {
    let magic = bytes.get(..4).unwrap_or_default();
    magic == b"\x7fELF"
        || magic == [0xcf, 0xfa, 0xed, 0xfe]
        || magic.starts_with(b"MZ")
        || path
            .extension()
            .is_some_and(|e| e == "so" || e == "dylib" || e == "dll")
}

impl NativeLibrary {
    /// Loads `path` and checks its ABI version before anything else is called.
    pub fn load(path: &Path) -> anyhow::Result<Arc<Self>> {
        // SAFETY: loading runs the library's initializers with this process's rights; callers
        // get here only when the user passed --allow-native, accepting exactly that.
        let library = unsafe { libloading::Library::new(path) }
            .with_context(|| format!("cannot load the native library {}", path.display()))?;
        let symbol = |name: &str| -> anyhow::Result<*const c_void> {
            // SAFETY: the symbol is only read as an address here; its type is the SDK's ABI,
            // checked by the version below before any other call.
            unsafe { library.get::<*const c_void>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} is not an llmb native adapter: it has no `{name}` (build it with \
                         plugin-sdk's export_backend_native!)",
                        path.display()
                    )
                })
        };
        let version_fn = symbol("llmb_native_abi_version")?;
        // SAFETY: `llmb_native_abi_version` is `extern "C" fn() -> u32` in every ABI version.
        let version = unsafe {
            std::mem::transmute::<*const c_void, unsafe extern "C" fn() -> u32>(version_fn)()
        };
        ensure!(
            version == ABI_VERSION,
            "{} speaks native adapter ABI {version}, this llmb speaks {ABI_VERSION}: rebuild it \
             with a matching plugin-sdk",
            path.display()
        );
        // SAFETY: ABI version 1 defines these symbols with exactly these signatures.
        let (new, free, call, free_bytes) = unsafe {
            (
                std::mem::transmute::<*const c_void, NewFn>(symbol("llmb_native_new")?),
                std::mem::transmute::<*const c_void, FreeFn>(symbol("llmb_native_free")?),
                std::mem::transmute::<*const c_void, CallFn>(symbol("llmb_native_call")?),
                std::mem::transmute::<*const c_void, FreeBytesFn>(symbol(
                    "llmb_native_free_bytes",
                )?),
            )
        };
        Ok(Arc::new(NativeLibrary {
            new,
            free,
            call,
            free_bytes,
            path: path.to_path_buf(),
            _library: library,
        }))
    }

    /// A fresh instance (its own parsers; the library's statics are shared by all).
    pub fn instantiate(self: &Arc<Self>, name: Arc<str>) -> NativeInstance {
        // SAFETY: the ABI's constructor takes nothing and returns an owned state.
        let state = unsafe { (self.new)() };
        NativeInstance {
            library: self.clone(),
            state,
            name,
        }
    }
}

/// One native adapter instance; the pool makes calls into it one at a time.
pub struct NativeInstance {
    library: Arc<NativeLibrary>,
    state: *mut c_void,
    name: Arc<str>,
}

// SAFETY: the state is only touched through `call` with `&mut self` (one call at a time), and
// adapters built with plugin-sdk keep shared configuration in thread-safe statics.
unsafe impl Send for NativeInstance {}

impl NativeInstance {
    /// Calls operation `op` with `args`; a panic or an undecodable reply is a fault.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        op: u32,
        args: &A,
    ) -> Result<R, PluginFault> {
        let input = postcard::to_allocvec(args).map_err(|e| PluginFault::Trap {
            plugin: self.name.to_string(),
            reason: format!("encoding: {e}"),
        })?;
        self.call_encoded(op, &input)
    }

    /// [`Self::call`] with the arguments already encoded (`feed`'s hand-made layout).
    pub fn call_encoded<R: DeserializeOwned>(
        &mut self,
        op: u32,
        input: &[u8],
    ) -> Result<R, PluginFault> {
        let fault = |reason: String| PluginFault::Trap {
            plugin: self.name.to_string(),
            reason,
        };
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut out_len = 0usize;
        // SAFETY: `state` came from this library's constructor; input and output pointers are
        // valid for the call; the output is freed below through the library.
        let code = unsafe {
            (self.library.call)(
                self.state,
                op,
                input.as_ptr(),
                input.len(),
                &mut out,
                &mut out_len,
            )
        };
        let bytes = if out.is_null() {
            Vec::new()
        } else {
            // SAFETY: the library returned `out_len` bytes at `out`, valid until freed.
            let copy = unsafe { std::slice::from_raw_parts(out, out_len) }.to_vec();
            // SAFETY: freed once, through the library that allocated it.
            unsafe { (self.library.free_bytes)(out, out_len) };
            copy
        };
        match code {
            status::OK => {
                postcard::from_bytes(&bytes).map_err(|e| fault(format!("undecodable reply: {e}")))
            }
            status::PANIC => Err(fault(format!(
                "panicked: {}",
                String::from_utf8_lossy(&bytes)
            ))),
            _ => Err(fault(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        // SAFETY: the state came from this library's constructor and is freed once.
        unsafe { (self.library.free)(self.state) };
    }
}
