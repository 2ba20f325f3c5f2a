//! Batched decoding across sessions: the sessions of a server share one [`Batcher`], and the
//! forward passes they ask for at about the same moment run as one
//! [`Model::forward_batch`], which reads each weight once for all of them.
//!
//! Why: decoding is bound by reading the weights (1.9 GB per step for SmolLM3-3B Q4_K_M), so
//! a pass over four sequences' tokens costs far less than four passes (`cargo xtask
//! bench-batch`: 2x the total tok/s of one sequence with four, Zen 4, 2 threads). Sessions
//! that took turns at the cores (one thread each, the OS interleaving their steps) now step
//! together.
//!
//! How, without a thread of its own: every session's thread stays where it is, in its
//! generation loop; its [`Backend::forward`](crate::Backend::forward) hands the tokens and
//! its cache to the batcher and waits. The first waiting thread that finds the batch ready
//! runs it for everyone and hands each thread its logits. The batch is ready when every
//! session in a generation has asked (they step in lockstep), or [`GATHER`] (or a
//! [`PASS_SHARE`]th of the last pass, if longer) after the oldest request or the last pass's
//! end, whichever is later (a session busy elsewhere, say blocked on a slow client, is not
//! waited for longer; counted from the pass's end, or two sessions would take turns, each
//! having waited through the other's pass).
//!
//! A pass that reads a prompt (or a chunk of one) also waits until no request has come for
//! [`GATHER`] (at most [`PROMPT_GATHER`]): clients that start together reach the batcher a
//! few milliseconds apart (0.2–3.6 ms for four streaming requests here), before the later
//! ones count as sessions in a generation, and a prompt pass run at once for the first would
//! hold the other prompts a whole pass (0.7 s on the 3B file for a 22-token prompt) and then
//! stall the first one's answer while they are read; read together, they start answering
//! together (`cargo xtask bench-server`, 4 clients: the slowest stream 5.5 -> 7.1 tok/s, all
//! first tokens within 15 ms of each other).
//!
//! A new request's prompt goes in chunks (`PREFILL_CHUNK`) beside the others' single tokens,
//! so running answers keep streaming while it is read; a batch takes at most the model's
//! prompt slice of tokens in all, the rest waits for the next pass. A session that finishes
//! or is cancelled leaves at once (its generation ends,
//! [`Backend::end_generation`](crate::Backend::end_generation)).
//!
//! Each sequence's logits are bit for bit those of its forward pass alone, so batching
//! changes no answer (tested); a session's prompt-lookup draft goes into the batch as an item
//! to check (`BatchItem::verify`), so drafts work for batched sessions too.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smollm3_model::{BatchItem, KvCache, Model};

use crate::{GenError, Result};

/// How long a request waits for the other sessions' before its batch runs without them.
/// Sampling and detokenizing a token take well under a millisecond, so sessions stepping
/// together all ask within this; a decode step of the 3B model takes 60 ms or more.
pub const GATHER: Duration = Duration::from_millis(4);

/// Sessions still missing from a batch are waited for at least [`GATHER`] and at most this
/// share of the last pass's time: four sessions on two cores take turns sampling,
/// detokenizing and streaming their tokens, and the last asked 4–5 ms after a pass of the 3B
/// file, so with a fixed 4 ms a fifth of its 4-session passes ran without one of them (that
/// session's token a whole pass later); a sixteenth of a 120 ms pass is 7.5 ms.
pub const PASS_SHARE: u32 = 16;

/// The longest a pass that reads a new prompt waits for other requests arriving after it
/// (see the module documentation): a few percent of a prompt pass of the 3B file.
pub const PROMPT_GATHER: Duration = Duration::from_millis(20);

/// Shared by the sessions whose passes may be batched; see the module documentation.
pub struct Batcher {
    model: Arc<Model>,
    /// [`GATHER`] and [`PROMPT_GATHER`], unless made with [`Batcher::with_gather`].
    gather: Duration,
    prompt_gather: Duration,
    state: Mutex<State>,
    /// Signalled when a request arrives, a pass ends, or a generation starts or ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Sessions in a generation: the most requests a batch waits for.
    active: usize,
    pending: Vec<Request>,
    /// A thread is running a pass.
    running: bool,
    /// When the last pass ended: a request that waited through a pass gives the sessions
    /// that pass served [`GATHER`] from its end to ask again, or two sessions would take
    /// turns forever, each waiting through the other's pass.
    free_since: Option<Instant>,
    /// Each finished request's logits: its last row, or every row of a draft.
    done: HashMap<u64, Result<Vec<Vec<f32>>>>,
    next_id: u64,
    /// How long the last pass took: the wait for sessions scales with it.
    last_pass: Duration,
    /// Passes run and sequences in them, for `Batcher::stats`.
    passes: u64,
    sequences: u64,
}

struct Request {
    id: u64,
    tokens: Vec<u32>,
    cache: Arc<Mutex<KvCache>>,
    /// A token and its draft to check (`Model::forward_verify`): every row's logits.
    verify: bool,
    since: Instant,
}

impl Request {
    /// Several tokens, not a draft to check: a prompt (or a chunk of one).
    fn reads_prompt(&self) -> bool {
        self.tokens.len() > 1 && !self.verify
    }
}

/// What a [`Batcher`] did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Sessions in a generation now.
    pub active: usize,
    pub passes: u64,
    /// Sequences over all passes (sequences / passes is the mean batch size).
    pub sequences: u64,
}

impl Batcher {
    pub fn new(model: Arc<Model>) -> Arc<Self> {
        Self::with_gather(model, GATHER, PROMPT_GATHER)
    }

    /// A batcher whose passes wait `gather` for the other sessions' requests, and those that
    /// read a new prompt until none has come for `gather`, at most `prompt_gather` (the
    /// defaults are [`GATHER`] and [`PROMPT_GATHER`]; tests wait longer).
    fn with_gather(model: Arc<Model>, gather: Duration, prompt_gather: Duration) -> Arc<Self> {
        Arc::new(Batcher {
            model,
            gather,
            prompt_gather,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn stats(&self) -> BatchStats {
        let state = self.lock();
        BatchStats {
            active: state.active,
            passes: state.passes,
            sequences: state.sequences,
        }
    }

    /// The state, even if a thread panicked while holding the lock (it is updated in single
    /// steps, so it stays consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin_generation(&self) {
        self.lock().active += 1;
        self.changed.notify_all();
    }

    pub(crate) fn end_generation(&self) {
        let mut state = self.lock();
        state.active = state.active.saturating_sub(1);
        drop(state);
        self.changed.notify_all();
    }

    /// `tokens` appended to `cache` in the next batch; the logits after the last one.
    pub(crate) fn forward(&self, tokens: &[u32], cache: &Arc<Mutex<KvCache>>) -> Result<Vec<f32>> {
        let mut rows = self.submit(tokens, cache, false)?;
        rows.pop()
            .ok_or_else(|| GenError::Backend("a batched pass returned no logits".into()))
    }

    /// A token and its draft appended to `cache` in the next batch, checked as
    /// `Model::forward_verify` does: the logits after each.
    pub(crate) fn forward_verify(
        &self,
        tokens: &[u32],
        cache: &Arc<Mutex<KvCache>>,
    ) -> Result<Vec<Vec<f32>>> {
        self.submit(tokens, cache, true)
    }

    fn submit(
        &self,
        tokens: &[u32],
        cache: &Arc<Mutex<KvCache>>,
        verify: bool,
    ) -> Result<Vec<Vec<f32>>> {
        // What would fail the whole batch fails this request alone, here.
        let vocab = self.model.config().vocab_size;
        if tokens.is_empty() {
            return Err(GenError::Backend("forward of no tokens".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(GenError::InvalidRequest(format!(
                "token {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if tokens.len() > cache.remaining() {
                return Err(GenError::Backend(format!(
                    "{} tokens do not fit the cache: {} of {} positions used",
                    tokens.len(),
                    cache.len(),
                    cache.max_len()
                )));
            }
        }
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push(Request {
            id,
            tokens: tokens.to_vec(),
            cache: cache.clone(),
            verify,
            since: Instant::now(),
        });
        self.changed.notify_all();
        loop {
            if let Some(result) = state.done.remove(&id) {
                return result;
            }
            match self.until_ready(&state) {
                Some(Duration::ZERO) => state = self.run_pass(state),
                Some(wait) => state = self.wait(state, wait),
                None => state = self.wait(state, self.gather),
            }
        }
    }

    /// How long until the pending requests' pass may run (zero: now), or None while a pass
    /// runs or nothing is pending.
    fn until_ready(&self, state: &State) -> Option<Duration> {
        if state.running {
            return None;
        }
        let oldest = state.pending.iter().map(|r| r.since).min()?;
        let since = state.free_since.map_or(oldest, |free| free.max(oldest));
        let waited = since.elapsed();
        let gather = self.gather.max(state.last_pass / PASS_SHARE);
        if state.pending.len() < state.active.max(1) && waited < gather {
            return Some(gather - waited);
        }
        // A new prompt waits for requests arriving just after it (clients starting together).
        let first_prompt = state
            .pending
            .iter()
            .filter(|r| r.reads_prompt())
            .map(|r| r.since)
            .min();
        let Some(first_prompt) = first_prompt else {
            return Some(Duration::ZERO);
        };
        let newest = state
            .pending
            .iter()
            .map(|r| r.since)
            .max()
            .unwrap_or(oldest);
        let quiet = self.gather.saturating_sub(newest.elapsed());
        let cap = self.prompt_gather.saturating_sub(first_prompt.elapsed());
        Some(quiet.min(cap))
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(state, timeout) {
            Ok((state, _)) => state,
            Err(e) => e.into_inner().0,
        }
    }

    /// Takes the pending requests that fit one pass (in order; at least the first), runs
    /// them with the lock released, and files their results.
    fn run_pass<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let slice = self.model.prompt_slice();
        let mut total = 0;
        let taken = state
            .pending
            .iter()
            .take_while(|r| {
                total += r.tokens.len();
                total <= slice
            })
            .count()
            .max(1);
        let batch: Vec<Request> = state.pending.drain(..taken).collect();
        state.running = true;
        state.passes += 1;
        state.sequences += batch.len() as u64;
        drop(state);
        // Files an error for every request of the pass if it panics, so no thread waits
        // forever.
        let mut guard = PassGuard {
            batcher: self,
            ids: batch.iter().map(|r| r.id).collect(),
        };
        let started = Instant::now();
        let results = self.pass(&batch);
        let mut state = self.lock();
        state.last_pass = started.elapsed();
        for (request, result) in batch.iter().zip(results) {
            state.done.insert(request.id, result);
        }
        guard.ids.clear();
        state.running = false;
        state.free_since = Some(Instant::now());
        drop(guard);
        self.changed.notify_all();
        state
    }

    /// One forward pass over `batch`: each request's logits, or the pass's error for each.
    fn pass(&self, batch: &[Request]) -> Vec<Result<Vec<Vec<f32>>>> {
        let mut caches: Vec<MutexGuard<'_, KvCache>> = batch
            .iter()
            .map(|r| r.cache.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let outcome = match batch {
            // Alone (or longer than a pass): the plain paths, which slice long inputs.
            [one] if !one.verify => self
                .model
                .forward_last(&one.tokens, &mut caches[0])
                .map(|logits| vec![logits]),
            [one] => self
                .model
                .forward_verify(&one.tokens, &mut caches[0])
                .map(|logits| vec![logits]),
            _ => {
                let mut items: Vec<BatchItem<'_>> = batch
                    .iter()
                    .zip(caches.iter_mut())
                    .map(|(r, cache)| BatchItem {
                        tokens: &r.tokens,
                        cache,
                        verify: r.verify,
                    })
                    .collect();
                self.model.forward_batch(&mut items)
            }
        };
        let read = |logits: &smollm3_model::Tensor, verify: bool| {
            let rows = if verify {
                logits.to_vec2::<f32>()
            } else {
                logits.to_vec1::<f32>().map(|row| vec![row])
            };
            rows.map_err(|e| GenError::Backend(format!("reading logits: {e}")))
        };
        match outcome {
            Ok(logits) => logits
                .iter()
                .zip(batch)
                .map(|(l, r)| read(l, r.verify))
                .collect(),
            Err(e) => {
                let message = e.to_string();
                batch
                    .iter()
                    .map(|_| Err(GenError::Backend(message.clone())))
                    .collect()
            }
        }
    }
}

/// Files "the pass failed" for the requests still in `ids` when dropped (only when the pass
/// panicked: on the normal path the ids are cleared first) and frees the batcher for the next
/// pass.
struct PassGuard<'a> {
    batcher: &'a Batcher,
    ids: Vec<u64>,
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut state = self.batcher.lock();
        for id in self.ids.drain(..) {
            state.done.insert(
                id,
                Err(GenError::Backend(
                    "the batched forward pass panicked".into(),
                )),
            );
        }
        state.running = false;
        state.free_since = Some(Instant::now());
        drop(state);
        self.batcher.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Arc<Model> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/gguf/smollm3-tiny-q4_k_m.gguf");
        Arc::new(Model::load(path).expect("fixture model"))
    }

    /// A session's generation: `begin_generation`, one pass over `tokens`, `end_generation`.
    fn one_prompt(batcher: &Batcher, tokens: &[u32]) -> Vec<f32> {
        let cache = Arc::new(Mutex::new(batcher.model().new_cache(64).unwrap()));
        batcher.begin_generation();
        let logits = batcher.forward(tokens, &cache).unwrap();
        batcher.end_generation();
        logits
    }

    #[test]
    fn prompts_arriving_together_are_read_in_one_pass() {
        // Long waits, so that a loaded machine's thread start-up cannot split the pass.
        let batcher =
            Batcher::with_gather(model(), Duration::from_millis(300), Duration::from_secs(5));
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| one_prompt(&batcher, &[1, 2, 3, 4]));
            // The second client's request reaches the batcher a little later, after the
            // first is already the only session in a generation.
            while batcher.lock().pending.is_empty() && batcher.stats().passes == 0 {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            let second = scope.spawn(|| one_prompt(&batcher, &[5, 6, 7]));
            (first.join().unwrap(), second.join().unwrap())
        });
        let stats = batcher.stats();
        assert_eq!((stats.passes, stats.sequences), (1, 2), "{stats:?}");
        // Each read as alone.
        let alone = Batcher::new(batcher.model().clone());
        assert_eq!(first, one_prompt(&alone, &[1, 2, 3, 4]));
        assert_eq!(second, one_prompt(&alone, &[5, 6, 7]));
    }

    #[test]
    fn missing_sessions_are_waited_for_a_share_of_the_last_pass() {
        let batcher = Batcher::with_gather(model(), Duration::from_millis(1), PROMPT_GATHER);
        let cache = Arc::new(Mutex::new(batcher.model().new_cache(8).unwrap()));
        let mut state = State {
            active: 2,
            free_since: Some(Instant::now()),
            last_pass: Duration::from_secs(16),
            ..State::default()
        };
        let request = |id| Request {
            id,
            tokens: vec![1],
            cache: cache.clone(),
            verify: false,
            since: Instant::now(),
        };
        state.pending.push(request(0));
        // One of two sessions has asked: the other gets a sixteenth of the last pass (1 s),
        // not the 1 ms floor.
        let wait = batcher.until_ready(&state).unwrap();
        assert!(wait > Duration::from_millis(500), "{wait:?}");
        // Both asked: at once.
        state.pending.push(request(1));
        assert_eq!(batcher.until_ready(&state), Some(Duration::ZERO));
    }

    #[test]
    fn a_lone_prompt_waits_no_longer_than_the_cap() {
        // No other request ever comes: the prompt runs once the cap is reached, with the
        // quiet wait longer than it.
        let batcher =
            Batcher::with_gather(model(), Duration::from_secs(60), Duration::from_millis(50));
        let started = Instant::now();
        one_prompt(&batcher, &[1, 2, 3]);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(batcher.stats().passes, 1);
    }
}
