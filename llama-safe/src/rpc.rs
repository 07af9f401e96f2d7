//! llama.cpp's RPC backend (feature `rpc`): use devices of other machines
//! ([`LlamaBackend::add_rpc_server`]) and serve this machine's ([`serve`]).
//!
//! llama.cpp aborts the process when it cannot reach an RPC server, so this
//! module checks first, in Rust, with a bounded timeout: it connects and
//! performs the protocol's HELLO exchange itself, and only then hands the
//! endpoint to llama.cpp. A server that goes away *after* that (mid-load,
//! mid-decode) still ends the process inside llama.cpp; nothing on this side
//! can catch it.
//!
//! The RPC protocol has no authentication or encryption: serve only on
//! networks you trust.

use crate::backend::{Device, LlamaBackend};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// How long [`LlamaBackend::add_rpc_server`] waits for a server to answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol's fixed HELLO command number and sizes (ggml-rpc.cpp).
const RPC_CMD_HELLO: u8 = 14;
const CONN_CAPS_SIZE: usize = 24;
const PROTO_MAJOR: u8 = 7;

/// Endpoints registered in this process, with their devices' names:
/// llama.cpp keeps one connection per endpoint for the life of the process.
static REGISTERED: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

fn rpc_error(endpoint: &str, reason: impl Into<crate::Reason>) -> Error {
    Error::Rpc {
        endpoint: endpoint.to_string(),
        reason: reason.into(),
    }
}

/// Checks `host:port` the way llama.cpp will split it (at the first `:`).
fn parse_endpoint(endpoint: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidParameter {
        name: "endpoint",
        reason: format!("{endpoint:?}: {reason}").into(),
    };
    let (host, port) = endpoint
        .split_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || port.contains(':') {
        return Err(bad(
            "expected host:port with an IPv4 address or a host name",
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be a number from 1 to 65535")),
    }
}

/// Connects and performs the HELLO exchange, within `timeout`.
fn probe(endpoint: &str, timeout: Duration) -> Result<()> {
    let addrs: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| rpc_error(endpoint, format!("cannot resolve: {e}")))?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut stream) => {
                let io =
                    |e: std::io::Error| rpc_error(endpoint, format!("HELLO exchange failed: {e}"));
                stream.set_read_timeout(Some(timeout)).map_err(io)?;
                stream.set_write_timeout(Some(timeout)).map_err(io)?;
                let mut request = vec![RPC_CMD_HELLO];
                request.extend_from_slice(&(CONN_CAPS_SIZE as u64).to_le_bytes());
                request.extend_from_slice(&[0u8; CONN_CAPS_SIZE]);
                stream.write_all(&request).map_err(io)?;
                let mut size = [0u8; 8];
                stream.read_exact(&mut size).map_err(io)?;
                let size = u64::from_le_bytes(size);
                if size != 4 + CONN_CAPS_SIZE as u64 {
                    return Err(rpc_error(
                        endpoint,
                        format!("not a llama.cpp RPC server (HELLO answer of {size} bytes)"),
                    ));
                }
                let mut answer = [0u8; 4 + CONN_CAPS_SIZE];
                stream.read_exact(&mut answer).map_err(io)?;
                let (major, minor, patch) = (answer[0], answer[1], answer[2]);
                if major != PROTO_MAJOR {
                    return Err(rpc_error(
                        endpoint,
                        format!("RPC protocol {major}.{minor}.{patch}; this build speaks {PROTO_MAJOR}.x"),
                    ));
                }
                return Ok(());
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(rpc_error(
        endpoint,
        format!("cannot connect within {timeout:?}: {last}"),
    ))
}

impl LlamaBackend {
    /// Adds the devices of the RPC server at `endpoint` (`host:port`) to this
    /// process, returning them (named `RPC0`, `RPC1`, ...). They can then be
    /// listed in [`LlamaModelParams::with_devices`](crate::LlamaModelParams::with_devices)
    /// and targeted by [`OverrideTarget::Device`](crate::OverrideTarget::Device).
    /// An unreachable endpoint, or one that is not an RPC server, is
    /// [`Error::Rpc`] within [`DEFAULT_CONNECT_TIMEOUT`]; adding the same
    /// endpoint again returns the same devices.
    ///
    /// ```no_run
    /// use llama_safe::{LlamaBackend, LlamaModelParams, OverrideTarget};
    /// let backend = LlamaBackend::init();
    /// let remote = backend.add_rpc_server("192.168.1.20:50052")?;
    /// let params = LlamaModelParams::default()
    ///     .with_n_gpu_layers(999)
    ///     .with_devices(&[remote[0].name.as_str()])   // layers on the remote device
    ///     .with_cpu_moe_all();                         // experts stay here
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn add_rpc_server(&self, endpoint: &str) -> Result<Vec<Device>> {
        self.add_rpc_server_with_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`add_rpc_server`](Self::add_rpc_server) with another timeout.
    pub fn add_rpc_server_with_timeout(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Vec<Device>> {
        parse_endpoint(endpoint)?;
        let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = registered.get(endpoint) {
            let all = self.devices();
            return Ok(all
                .into_iter()
                .filter(|d| names.contains(&d.name))
                .collect());
        }
        probe(endpoint, timeout)?;
        let c = CString::new(endpoint).map_err(|_| Error::NulByte { what: "endpoint" })?;
        // SAFETY: c is a valid "host:port" string (checked above) and the
        // server answered HELLO just now, so llama.cpp's connection (which
        // aborts on failure) finds it; the returned registry lives for the
        // process.
        let reg = crate::ffi::non_null(
            || unsafe { llama_safe_sys::ggml_backend_rpc_add_server(c.as_ptr()) },
            |reason| rpc_error(endpoint, format!("the server offers no devices ({reason})")),
        )?
        .as_ptr();
        // SAFETY: reg is a live registry; registering makes its devices
        // visible to the device list and to model loading, once per endpoint
        // (guarded by REGISTERED).
        let devices: Vec<Device> = unsafe {
            llama_safe_sys::ggml_backend_register(reg);
            (0..llama_safe_sys::ggml_backend_reg_dev_count(reg))
                .map(|i| Device::from_raw(llama_safe_sys::ggml_backend_reg_dev_get(reg, i)))
                .collect()
        };
        registered.insert(
            endpoint.to_string(),
            devices.iter().map(|d| d.name.clone()).collect(),
        );
        Ok(devices)
    }
}

/// Serves `devices` (names such as `CPU`, `CUDA0`; empty: every local device)
/// over the RPC protocol at `endpoint`, with `threads` CPU threads and an
/// optional tensor cache folder. It runs until the process ends; it returns
/// only when it cannot start (a bad endpoint, an address in use, an unknown
/// device).
///
/// ```no_run
/// let backend = llama_safe::LlamaBackend::init();
/// let stopped = llama_safe::rpc::serve(&backend, "127.0.0.1:50052", &[], 4, None);
/// eprintln!("RPC server could not start: {}", stopped.unwrap_err());
/// ```
pub fn serve(
    backend: &LlamaBackend,
    endpoint: &str,
    devices: &[&str],
    threads: u32,
    cache_dir: Option<&Path>,
) -> Result<std::convert::Infallible> {
    parse_endpoint(endpoint)?;
    // A bind error is llama.cpp's stderr otherwise; find it here, typed.
    drop(
        TcpListener::bind(endpoint)
            .map_err(|e| rpc_error(endpoint, format!("cannot listen: {e}")))?,
    );
    let local: Vec<Device> = backend
        .devices()
        .into_iter()
        .filter(|d| !d.name.starts_with("RPC"))
        .collect();
    let names: Vec<String> = if devices.is_empty() {
        local.iter().map(|d| d.name.clone()).collect()
    } else {
        devices.iter().map(|d| d.to_string()).collect()
    };
    let mut raw = Vec::with_capacity(names.len());
    for name in &names {
        if !local.iter().any(|d| &d.name == name) {
            return Err(Error::UnknownDevice {
                name: name.clone(),
                available: local.iter().map(|d| d.name.clone()).collect(),
            });
        }
        raw.push(crate::backend::device_by_name(name)?);
    }
    let c_endpoint = CString::new(endpoint).map_err(|_| Error::NulByte { what: "endpoint" })?;
    let c_cache = match cache_dir {
        Some(p) => Some(crate::ffi::c_path(p)?),
        None => None,
    };
    // SAFETY: every pointer is valid for the call, which only returns when
    // the server cannot start; the devices are registry devices.
    unsafe {
        llama_safe_sys::ggml_backend_rpc_start_server(
            c_endpoint.as_ptr(),
            c_cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads.max(1) as usize,
            raw.len(),
            raw.as_mut_ptr(),
        );
    }
    Err(rpc_error(
        endpoint,
        "the RPC server stopped (see its output on stderr)",
    ))
}
