//! Keeping freed tensor memory in the process, for binaries that run the model.
//!
//! Why: a prompt's forward pass allocates a new output for every candle op, blocks of 4–32 MB at
//! 512 tokens (the FFN's `[512, 11008]` f32 activations are 22.5 MB, a layer's attention scores
//! 16.8 MB). glibc's malloc serves blocks that size with `mmap` and returns them with `munmap`
//! until its adaptive threshold has seen them, and trims the heap's top as soon as it is free,
//! so every op faults in and zeroes fresh pages: 8% of a 3B prefill's samples were page faults
//! (Zen 4, `perf record` of `xtask bench-child --prompt 512`). With blocks up to 32 MB kept on
//! the heap and up to 512 MB of free heap kept, prefill @512 went from 25.5–27.4 to 27.5–30.3
//! tok/s in interleaved runs. The price: up to 512 MB of freed memory stays counted in the
//! process's RSS after a long prompt (its peak does not move).
//!
//! A library must not change its host's allocator behind its back, so this is a function the
//! binaries call, not something loading a model does.

/// Keeps freed blocks of up to 32 MB (glibc's largest setting) on the heap and up to 512 MB of
/// free heap in the process. Does nothing off glibc (other allocators have their own caches).
/// Call it once, early, from a binary's `main`.
pub fn keep_freed_tensor_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes two of malloc's parameters; it is safe to call at any
    // time (glibc takes the arena lock), and a refused value leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
