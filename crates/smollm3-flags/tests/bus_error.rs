//! `explain_bus_errors`: a read from a mapped file truncated under it ends the process with
//! our one line and exit code 1 (without the handler: killed by SIGBUS, no message). The test
//! runs itself again as the child that takes the fault.

#![cfg(unix)]

use std::process::Command;

const CHILD: &str = "SMOLLM3_BUS_ERROR_CHILD";

#[test]
fn a_read_from_a_truncated_mapped_file_ends_the_process_with_one_line() {
    if std::env::var_os(CHILD).is_some() {
        take_the_fault();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_read_from_a_truncated_mapped_file_ends_the_process_with_one_line",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: the model file was truncated or overwritten while in use"),
        "{stderr}"
    );
}

/// Maps a 64 KiB file, truncates it to nothing and reads from the mapping: SIGBUS.
fn take_the_fault() -> ! {
    use std::os::fd::AsRawFd;
    smollm3_flags::explain_bus_errors();
    let path = std::env::temp_dir().join(format!("smollm3-bus-error-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a fresh read-only shared mapping of the whole file.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            64 << 10,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    // SAFETY: inside the mapping; the page is past the file's end now, so the read faults.
    let byte = unsafe { std::ptr::read_volatile(map.cast::<u8>().add(8192)) };
    panic!("the read after truncation returned {byte} instead of faulting");
}
