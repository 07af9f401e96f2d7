//! The processes around a measurement: a free loopback port, a process's
//! memory from `/proc`, and an `rpc_server` (the example) on loopback whose
//! device stands in for a GPU. Shared by `moe_bench`, `serve_bench` and
//! `tests/rpc.rs`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now (another process may take
/// it before it is used).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`, ...) for the
/// process `pid`, or this process for `None` (Linux).
pub fn status_bytes(pid: Option<u32>, field: &str) -> Option<u64> {
    let pid = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// An `rpc_server` on a free loopback port, killed on drop.
pub struct RpcServer {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub endpoint: String,
}

impl RpcServer {
    /// Starts `exe` with `threads` threads, its output going to `log` (or
    /// nowhere), and waits until it accepts connections (one that closes at
    /// once is fine: the server serves its clients one after the other).
    pub fn start(exe: &Path, threads: u32, log: Option<&Path>) -> Result<RpcServer, String> {
        let io = |e: std::io::Error| format!("{}: {e}", exe.display());
        let port = free_port().map_err(io)?;
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .and_then(|f| Ok((f.try_clone()?, f)))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                (Stdio::from(file.0), Stdio::from(file.1))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(exe)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", &threads.to_string()])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(io)?;
        let mut server = RpcServer {
            child,
            endpoint: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&server.endpoint).is_err() {
            let exited = server.child.try_wait().map_err(io)?.is_some();
            if exited || Instant::now() > deadline {
                return Err(format!(
                    "{} did not start listening on {}",
                    exe.display(),
                    server.endpoint
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
