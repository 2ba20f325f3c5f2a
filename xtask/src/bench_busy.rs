//! `cargo xtask bench --busy-core`: one core kept busy by another process while we measure.
//!
//! candle's pool threads spin while they wait for each other, so a single busy core can cost a
//! multi-threaded decode far more than its share (docs/performance.md, "Noise"). This makes
//! that situation reproducible: a spinning child process (`xtask spin`, hidden) runs for the
//! whole measurement and is killed when the [`BusyCore`] guard drops, also on error or panic.
//! The spinner also exits by itself when its parent dies (e.g. killed with SIGKILL).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

/// The spinning process; killed and reaped on drop.
pub struct BusyCore {
    child: Child,
    started: Instant,
}

/// What the spinner did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct BusyCoreReport {
    /// The measured run it contended ("ours 1", "llama.cpp 1", ...).
    pub during: String,
    pub pid: u32,
    /// Seconds it ran, and CPU seconds it used (`/proc/<pid>/schedstat`): about equal when it
    /// had a core to itself.
    pub wall_s: f64,
    pub cpu_s: Option<f64>,
}

impl BusyCore {
    /// Spawns `exe spin`.
    pub fn start(exe: &Path) -> Result<Self> {
        let child = Command::new(exe)
            .arg("spin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the busy-core spinner {} spin", exe.display()))?;
        Ok(Self {
            child,
            started: Instant::now(),
        })
    }

    /// The spinner's pid, run time and CPU time so far.
    pub fn report(&self) -> BusyCoreReport {
        let pid = self.child.id();
        BusyCoreReport {
            during: String::new(),
            pid,
            wall_s: self.started.elapsed().as_secs_f64(),
            cpu_s: std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9),
        }
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        // Errors mean it is already gone; wait() reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `xtask spin`: burns one core until killed or until its parent process is gone.
pub fn spin() -> Result<()> {
    let parent = parent_id();
    let mut x = 0u64;
    loop {
        for _ in 0..(1 << 24) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        if parent_id() != parent {
            return Ok(());
        }
    }
}

#[cfg(unix)]
fn parent_id() -> u32 {
    std::os::unix::process::parent_id()
}

#[cfg(not(unix))]
fn parent_id() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_kills_the_spinner() {
        // A stand-in for `xtask spin` (the test binary is not the xtask binary): a shell loop.
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let busy = BusyCore {
            child,
            started: Instant::now(),
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = busy.report();
        assert_eq!(r.pid, pid);
        assert!(r.cpu_s.unwrap() > 0.02, "spinner used {:?} s", r.cpu_s);
        drop(busy);
        // Killed and reaped: no /proc entry is left (not even a zombie).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
