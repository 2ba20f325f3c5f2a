//! `smollm3 chat` on a pseudo-terminal: Ctrl+C stops the answer being written and the chat
//! goes on; Ctrl+C clears a typed line; Ctrl+D or Ctrl+C at an empty prompt exits.
//!
//! The answer is a long replayed reply and the test stops reading the terminal while it is
//! written, so the chat blocks on its output until Ctrl+C has been typed: no timing races.
#![cfg(target_os = "linux")]

mod common;

use common::tiny;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pty {
    master: OwnedFd,
    child: Child,
    seen: Vec<u8>,
}

impl Pty {
    fn spawn(args: &[&str], home: &Path) -> Pty {
        Self::spawn_with(args, home, &home.join("state"))
    }

    fn spawn_with(args: &[&str], home: &Path, state: &Path) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors; the other pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smollm3"));
        cmd.args(args)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .env("HOME", home)
            .env("XDG_STATE_HOME", state)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A new session whose controlling terminal is the pty, so Ctrl+C is SIGINT.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn smollm3 chat");
        Pty {
            master,
            child,
            seen: Vec::new(),
        }
    }

    fn send(&self, bytes: &[u8]) {
        // SAFETY: writing from a valid buffer to an open descriptor.
        let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize, "write to the pty");
    }

    /// Reads until `needle` appears after `from` (an offset into everything seen); returns the
    /// offset just after it.
    fn expect(&mut self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = find(&self.seen[from.min(self.seen.len())..], needle.as_bytes()) {
                return from + i + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {needle:?}; the terminal showed:\n{}",
                String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
            );
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            if ready <= 0 {
                continue;
            }
            let mut buf = [0u8; 65536];
            // SAFETY: reading into a local buffer of the given size.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(
                n > 0,
                "the terminal closed while waiting for {needle:?}; it showed:\n{}",
                String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
            );
            self.seen.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// Drains the output until the chat exits; returns its exit status.
    fn wait(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the chat did not exit");
            let mut buf = [0u8; 4096];
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: as in `expect`.
            if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
                let n = unsafe {
                    libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n > 0 {
                    self.seen.extend_from_slice(&buf[..n as usize]);
                }
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A chat whose first answer is far more than a terminal buffers (so the chat blocks writing
/// it until the test reads on) and whose second is `second`; `extra` flags are added.
fn chat_with_a_long_first_answer(home: &Path, second: &str, extra: &[&str]) -> Pty {
    let replies = home.join("replies.json");
    let long = "word ".repeat(40_000);
    std::fs::write(
        &replies,
        serde_json::to_string(&[long.as_str(), second]).unwrap(),
    )
    .unwrap();
    let m = tiny();
    let r = replies.display().to_string();
    let mut args = vec![
        "chat",
        "--model",
        &m,
        "--replay",
        &r,
        "--ctx",
        "400000",
        "--no-think",
    ];
    args.extend_from_slice(extra);
    Pty::spawn(&args, home)
}

#[test]
fn ctrl_c_stops_the_answer_and_ctrl_d_exits() {
    let home = tempfile::tempdir().unwrap();
    let mut pty = chat_with_a_long_first_answer(home.path(), "Short.", &[]);
    let at = pty.expect(0, ">>> ");
    pty.send(b"Tell me everything\r");
    // Let the answer fill the terminal's buffer, then interrupt it.
    let at = pty.expect(at, "word word word");
    std::thread::sleep(Duration::from_millis(300));
    pty.send(b"\x03");
    let at = pty.expect(at, "[interrupted]");
    let at = pty.expect(at, ">>> ");
    // The session is still usable: the next answer comes, and the history has the partial one.
    pty.send(b"/stats\r");
    let at = pty.expect(at, "finish             cancelled");
    let at = pty.expect(at, ">>> ");
    pty.send(b"And?\r");
    let at = pty.expect(at, "Short.");
    let at = pty.expect(at, ">>> ");
    // Ctrl+C on a typed line clears it; the chat goes on.
    pty.send(b"not sent\x03");
    pty.send(b"/show\r");
    let at = pty.expect(at, "messages           4");
    pty.expect(at, ">>> ");
    pty.send(b"\x04");
    assert_eq!(pty.wait(), 0);
    // The lines typed were kept in the history file.
    let history = std::fs::read_to_string(home.path().join("state/smollm3/history")).unwrap();
    assert!(history.contains("Tell me everything"), "{history}");
    assert!(!history.contains("not sent"), "{history}");
}

#[test]
fn ctrl_c_at_an_empty_prompt_exits() {
    let home = tempfile::tempdir().unwrap();
    let replies = home.path().join("replies.json");
    std::fs::write(&replies, "[]").unwrap();
    let m = tiny();
    let r = replies.display().to_string();
    let mut pty = Pty::spawn(
        &["chat", "--model", &m, "--replay", &r, "--no-history"],
        home.path(),
    );
    pty.expect(0, ">>> ");
    pty.send(b"\x03");
    assert_eq!(pty.wait(), 0);
    assert!(!home.path().join("state").exists());
}

#[test]
fn an_unwritable_history_does_not_matter() {
    let home = tempfile::tempdir().unwrap();
    let replies = home.path().join("replies.json");
    std::fs::write(&replies, r#"["Fine."]"#).unwrap();
    // A file where the state directory should be: nothing can be created under it.
    let blocker = home.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let m = tiny();
    let r = replies.display().to_string();
    let mut pty = Pty::spawn_with(
        &["chat", "--model", &m, "--replay", &r],
        home.path(),
        &blocker.join("state"),
    );
    let at = pty.expect(0, ">>> ");
    pty.send(b"Hi\r");
    let at = pty.expect(at, "Fine.");
    pty.expect(at, ">>> ");
    pty.send(b"\x04");
    assert_eq!(pty.wait(), 0);
}

#[test]
fn lines_typed_while_an_answer_streams_all_run() {
    let home = tempfile::tempdir().unwrap();
    let mut pty = chat_with_a_long_first_answer(home.path(), "Second answer.", &["--no-history"]);
    let at = pty.expect(0, ">>> ");
    pty.send(b"Tell me everything\r");
    let at = pty.expect(at, "word word word");
    // Three lines typed ahead, in one go, while the answer is still being written.
    pty.send(b"/system Be brief.\r/show\rAnd?\r");
    // Every one of them runs, in order, each shown after a prompt.
    let at = pty.expect(at, ">>> /system Be brief.");
    let at = pty.expect(at, ">>> /show");
    let at = pty.expect(at, "Be brief.");
    let at = pty.expect(at, ">>> And?");
    let at = pty.expect(at, "Second answer.");
    pty.expect(at, ">>> ");
    pty.send(b"\x04");
    assert_eq!(pty.wait(), 0);
}
