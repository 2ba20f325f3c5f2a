//! A model file truncated while mapped: the weights are read from the file's pages, and the
//! kernel answers a read past the new end with SIGBUS, which kills the process with "Bus
//! error (core dumped)" and nothing else. The binaries install [`explain_bus_errors`] first
//! thing, so the user reads what happened and what to do, on one line, and the process exits
//! 1 (a supervisor restarts it). Nothing can be recovered at that point (a weight read
//! failed inside a matrix product), so the handler writes and exits, no unwinding.
//!
//! Servers also check the file before each request (`FileIdentity::changed_in_place`), so a
//! change between requests is refused cleanly; this is the net for one during an answer.

/// What a binary says when a read of the mapped model fails.
const MESSAGE: &[u8] = b"error: the model file was truncated or overwritten while in use (its \
weights are read from the file itself); put the complete file back and start again\n";

/// Installs the SIGBUS handler (Unix; elsewhere nothing). Call it before loading a model.
pub fn explain_bus_errors() {
    #[cfg(unix)]
    {
        extern "C" fn on_bus_error(_signal: libc::c_int) {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; MESSAGE is static.
            unsafe {
                libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
                libc::_exit(1);
            }
        }
        // SAFETY: a zeroed sigaction is valid (no flags, empty mask once sigemptyset runs);
        // the handler only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_bus_error as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }
}
