use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops a generation from another thread (or a signal handler). Clones share one flag.
///
/// The generation checks it before every model call, and a model backend before every layer
/// of a prompt chunk too, so it stops within one token (or one layer of a prompt chunk); the
/// session keeps exactly what was processed and stays usable.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the generation to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Clears the flag, so the handle can be reused for the next generation.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
