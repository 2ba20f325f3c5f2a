//! How long candle's idle pool workers spin, for binaries that run the model.
//!
//! Why: the ops our kernels leave to candle (norms, SiLU, adds, softmax) run on candle's own
//! barrier pool, whose worker spins after each op for `CANDLE_BARRIER_POOL_SPIN_LIMIT`
//! iterations (25,000 `pause`s by default, about half a millisecond) before it parks. On two
//! cores that spin takes a core from our pool's worker, which then waits for it: in a
//! SmolLM2-135M prefill of 64 tokens candle's worker spent 18% of all samples spinning
//! (`perf`, Zen 4, 2 threads), and with the spin cut to 200 prefill went from a median of 412
//! to 590 tok/s (six interleaved runs each; the 3B file's longer matmuls moved within the
//! noise, decode neither way).
//!
//! candle reads the variable once, when its pool starts, so this must run before the first
//! tensor op; a value the user set is kept. Setting a variable is for a binary's `main` before
//! it starts threads, not for a library, hence a function the binaries call.

/// The spin our binaries give candle's idle workers (about 4 µs of `pause` on Zen 4).
pub const IDLE_SPIN: u32 = 200;

/// Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT` to [`IDLE_SPIN`] unless it is set already. Call it
/// first thing in `main`, before any thread or tensor exists.
pub fn shorten_idle_spin() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", IDLE_SPIN.to_string());
    }
}
