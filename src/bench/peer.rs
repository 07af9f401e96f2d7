//! llama.cpp's own tools as the peer of the device-memory table, for one
//! configuration on one device: its dry run (`llama-fit-params --fit-print
//! on`), its `--fit` choice (`llama-fit-params`), and what `llama-server`
//! holds once loaded (the memory breakdown it prints on exit). Every figure
//! is llama.cpp's own, in whole MiB as it prints them.
//!
//! Built by `scripts/build-llama-peer.sh --vulkan llama-fit-params llama-server`.

use super::config::Config;
use super::measure::RunSpec;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// MiB on one device as llama.cpp prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMib {
    /// Weights.
    pub model: u64,
    /// KV cache.
    pub context: u64,
    /// Compute buffers.
    pub compute: u64,
}

impl PeerMib {
    /// Weights, KV cache and compute buffers.
    pub fn total(&self) -> u64 {
        self.model + self.context + self.compute
    }
}

/// What llama.cpp's tools said for one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerMemory {
    /// The configuration (`baseline`, `cpu-moe`, `fit=...`).
    pub config: String,
    /// The placement flags given to llama.cpp.
    pub args: Vec<String>,
    /// `llama-fit-params --fit-print on`: its dry run.
    pub dry_run: Result<PeerMib, String>,
    /// `llama-server`'s memory breakdown once loaded.
    pub served: Result<PeerMib, String>,
}

/// The placement flags llama.cpp takes for a fixed `config`: the layers
/// and the MoE flags, with its own fit off. `None` for a fit configuration
/// ([`fit_choice`] runs llama.cpp's) and for the C program.
fn placement(spec: &RunSpec, config: &Config) -> Option<Vec<String>> {
    let moe = match config {
        Config::Baseline => vec![],
        Config::CpuMoe => vec!["--cpu-moe".into()],
        Config::NCpuMoe(k) => vec!["--n-cpu-moe".into(), k.to_string()],
        Config::Fit(_) | Config::CGreedy => return None,
    };
    let mut v = vec!["-ngl".to_string(), spec.n_gpu_layers.to_string()];
    v.extend(moe);
    v.extend(["-fit".into(), "off".into()]);
    Some(v)
}

/// The flags every llama.cpp run shares: model, context, device, threads.
fn common(spec: &RunSpec, device: &str) -> Vec<String> {
    vec![
        "-m".into(),
        spec.model.display().to_string(),
        "-c".into(),
        spec.ctx_size.to_string(),
        "-dev".into(),
        device.into(),
        "-t".into(),
        spec.threads.to_string(),
    ]
}

/// llama.cpp's `-fitt` margin that leaves `budget` bytes of `free` for the
/// model, in whole MiB (rounded up, so llama.cpp's budget is never larger).
pub fn margin_for(free: u64, budget: u64) -> u64 {
    free.saturating_sub(budget).div_ceil(1 << 20)
}

/// llama.cpp's `--fit` choice, and what it holds once loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerFit {
    /// The flags `llama-fit-params` printed (`-c N -ngl G -ot ...`).
    pub flags: String,
    /// The device's free memory as llama.cpp read it, MiB.
    pub free_mib: u64,
    /// Its budget: that free memory less the margin, MiB.
    pub budget_mib: u64,
    /// `llama-server` loaded with those flags (fit off).
    pub served: Result<PeerMib, String>,
}

/// llama.cpp's `--fit` choice with margin `margin_mib` (`llama-fit-params
/// -fitt`), the free memory it saw (the budget is that less the margin:
/// free memory moves between two reads), and `llama-server` loaded with
/// the flags it chose.
pub fn fit_choice(
    dir: &Path,
    spec: &RunSpec,
    device: &str,
    margin_mib: u64,
) -> Result<PeerFit, String> {
    let mut args = common(spec, device);
    args.extend(["-fitt".into(), margin_mib.to_string(), "-v".into()]);
    let exe = dir.join("llama-fit-params");
    let out = Command::new(&exe)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let free_mib = stderr
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" MiB of device memory vs. ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| "llama-fit-params did not say the free memory it saw".to_string())?;
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(2).collect();
        return Err(format!("llama-fit-params failed: {}", tail.join(" / ")));
    }
    let flags = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("-c "))
        .map(str::to_string)
        .ok_or_else(|| format!("llama-fit-params printed no flags: {stdout:?}"))?;
    let mut all = common(spec, device);
    all.extend(split_flags(&flags));
    all.extend(["-fit".into(), "off".into()]);
    Ok(PeerFit {
        served: serve(&dir.join("llama-server"), &all, device),
        budget_mib: u64::saturating_sub(free_mib, margin_mib),
        free_mib,
        flags,
    })
}

/// Splits `-c 4096 -ngl 8 -ot "a=CPU,b=CPU"` into arguments, quotes removed.
fn split_flags(flags: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in flags.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What llama.cpp's tools say for a fixed `config` on `device` (`None`
/// for a fit configuration: see [`fit_choice`]).
pub fn measure(dir: &Path, spec: &RunSpec, config: &Config, device: &str) -> Option<PeerMemory> {
    let args = placement(spec, config)?;
    let mut all = common(spec, device);
    all.extend(args.iter().cloned());
    let mut print = all.clone();
    print.extend(["--fit-print".into(), "on".into()]);
    let dry_run = run(&dir.join("llama-fit-params"), &print).and_then(|out| {
        out.lines()
            .find_map(|l| parse_fit_print(l, device))
            .ok_or_else(|| format!("no line for {device} in {out:?}"))
    });
    let served = serve(&dir.join("llama-server"), &all, device);
    Some(PeerMemory {
        config: config.name(),
        args,
        dry_run,
        served,
    })
}

/// `Vulkan0 12 4 8`: device, model, context, compute (MiB).
fn parse_fit_print(line: &str, device: &str) -> Option<PeerMib> {
    let mut words = line.split_whitespace();
    if words.next()? != device {
        return None;
    }
    let mut n = || words.next()?.parse().ok();
    Some(PeerMib {
        model: n()?,
        context: n()?,
        compute: n()?,
    })
}

/// `llama_memory_breakdown_print: |   - Vulkan0 (llvmpipe) | 24105 = 22000 + (153 = 140 + 8 + 5) + 1952 |`
fn parse_breakdown(line: &str, device: &str) -> Option<PeerMib> {
    let rest = line.split_once(&format!("- {device} ("))?.1;
    let inner = rest.split_once("= ")?.1.split_once("+ (")?.1;
    let (_, parts) = inner.split_once('=')?;
    let parts = parts.split(')').next()?;
    let mut n = parts.split('+').map(|p| p.trim().parse::<u64>().ok());
    Some(PeerMib {
        model: n.next()??,
        context: n.next()??,
        compute: n.next()??,
    })
}

/// Runs `exe` with `args`; its stdout, or why it failed.
fn run(exe: &Path, args: &[String]) -> Result<String, String> {
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!("{} failed: {}", exe.display(), tail.join(" / ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `llama-server` with `args` on a free loopback port, waits for its
/// health check, stops it with SIGINT and reads the device's line of the
/// memory breakdown it prints on exit (with `-v`).
fn serve(exe: &Path, args: &[String], device: &str) -> Result<PeerMib, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let mut child = Command::new(exe)
        .args(args)
        // -v: the memory breakdown is logged at trace level.
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-np",
            "1",
            "-v",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // Drained as it comes: a full pipe would block the server's logging.
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let start = Instant::now();
    let mut healthy = false;
    while start.elapsed() < Duration::from_secs(600) {
        if let Ok(Some(status)) = child.try_wait() {
            let err = reader.join().unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            return Err(format!(
                "llama-server exited early ({status}): {}",
                tail.join(" / ")
            ));
        }
        if health(port) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args([
            if healthy { "-INT" } else { "-KILL" },
            &child.id().to_string(),
        ])
        .status();
    let _ = child.wait();
    let err = reader.join().unwrap_or_default();
    if !healthy {
        return Err("llama-server was not healthy within 600 s".into());
    }
    err.lines()
        .find_map(|l| parse_breakdown(l, device))
        .ok_or_else(|| format!("no memory breakdown line for {device}"))
}

/// Whether `GET /health` on loopback `port` answers 200.
fn health(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_cpp_lines() {
        assert_eq!(
            parse_fit_print("Vulkan0 140 8 5 ", "Vulkan0"),
            Some(PeerMib {
                model: 140,
                context: 8,
                compute: 5
            })
        );
        assert_eq!(parse_fit_print("Host 1 2 3", "Vulkan0"), None);
        let line = "llama_memory_breakdown_print: |   - Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits)) | 24105 = 22000 + (153 = 140 +       8 +       5) +        1952 |";
        assert_eq!(
            parse_breakdown(line, "Vulkan0"),
            Some(PeerMib {
                model: 140,
                context: 8,
                compute: 5
            })
        );
        assert_eq!(
            split_flags(r#"-c 4096 -ngl 8 -ot "blk\.2\.ffn_.*=CPU,blk\.3\.x=CPU""#),
            [
                "-c",
                "4096",
                "-ngl",
                "8",
                "-ot",
                r"blk\.2\.ffn_.*=CPU,blk\.3\.x=CPU"
            ]
        );
        assert_eq!(margin_for(10 << 20, 4 << 20), 6);
        assert_eq!(margin_for((10 << 20) + 1, 4 << 20), 7);
    }
}
