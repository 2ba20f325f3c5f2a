//! The server core, apart from HTTP (as llama.cpp keeps its task queue apart from its HTTP
//! layer): a fixed set of sessions ("slots"), each a [`Session`] with its own KV cache, one
//! generation thread per slot, and one bounded FIFO queue of requests in front of them.
//!
//! - **Order and bounds.** Requests start in the order they came; at most `queue_limit` wait,
//!   beyond that [`Scheduler::submit`] says [`SubmitError::QueueFull`] at once (the HTTP layer
//!   answers 503 with `Retry-After`), so a burst never piles up unseen. One that waits longer
//!   than `queue_timeout` is answered [`SubmitError::QueueTimeout`] (a load balancer can try
//!   another server instead of waiting on this one forever).
//! - **Clients that stop reading.** A slot hands its events to a bounded channel; a client
//!   that takes none of them for `stall_timeout` once the channel is full (it stopped reading
//!   while keeping its connection open) loses the slot: the generation is cancelled and the
//!   client, should it read again, finds [`SubmitError::Stalled`] after what was buffered.
//!   Without this, a few such clients would hold every slot for good.
//! - **Prompt cache.** A conversation's next turn goes to the idle slot that holds its earlier
//!   turns, so only the new tokens are processed; a new conversation prefers an empty slot
//!   over someone else's cache, then the slot sharing the longest prefix (the system prompt
//!   and tools). See [`pick_slot`].
//! - **Off the async runtime.** Generation runs on the slots' own threads; each request gets
//!   a channel of [`JobEvent`]s that an async handler awaits. Dropping the receiver (a client
//!   that disconnected) cancels the generation before its next token, and a request whose
//!   client left while it waited is never started, so the slot is free at once.
//! - **Sharing the cores.** Slots run at the same time on their own threads, so a short answer
//!   is not stuck behind a long one. Sessions made by `Engine::batched_sessions` (what
//!   `smollm3-web` runs unless `--no-cont-batching`) step together: the forward passes they
//!   ask for at the same moment run as one batched pass (`smollm3_gen::Batcher`), a new
//!   request's prompt chunks beside the others' tokens; otherwise the OS interleaves their
//!   steps.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smollm3_gen::{Backend, CancelHandle, Event, GenError, GenerateRequest, Session};
use tokio::sync::mpsc;

/// What a request's channel carries: the generation's events, ending with
/// [`Event::Done`], or one error if the request failed (before any event, e.g. a prompt over
/// the context, or during generation, e.g. a backend failure), or was dropped by the
/// scheduler (it waited too long in the queue, or its client stopped reading).
#[derive(Debug)]
pub enum JobEvent {
    Event(Event),
    Failed(GenError),
    Dropped(SubmitError),
}

/// Why a request was not queued ([`Scheduler::submit`]) or was dropped by the scheduler
/// ([`JobEvent::Dropped`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is busy: {limit} requests are already waiting; retry shortly")]
    QueueFull { limit: usize },
    #[error("the server is shutting down")]
    Closed,
    #[error(
        "the server is busy: this request waited {waited_secs} s for a free slot, the most a \
         request may wait; retry later"
    )]
    QueueTimeout { waited_secs: u64 },
    #[error(
        "the answer was stopped: this client read none of it for {secs} s, so its slot went \
         to other requests"
    )]
    Stalled { secs: u64 },
}

/// A queued request: its receiver of events and where it stood in the queue.
#[derive(Debug)]
pub struct Ticket {
    pub events: mpsc::Receiver<JobEvent>,
    /// Requests ahead of it when it was queued (0: it starts as soon as a slot is idle).
    pub queue_position: usize,
}

/// One slot's state, for `/slots` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub id: usize,
    pub busy: bool,
    /// Tokens in its cache after its last request.
    pub cached_tokens: usize,
    pub context: usize,
}

/// The scheduler's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerStatus {
    pub slots: Vec<SlotStatus>,
    /// Requests waiting for a slot.
    pub queued: usize,
}

struct Job {
    request: GenerateRequest,
    queued_at: Instant,
    /// The prompt's tokens, to find the slot with the longest cached prefix.
    prompt_ids: Vec<u32>,
    events: mpsc::Sender<JobEvent>,
}

struct Slot<B: Backend> {
    id: usize,
    session: Session<B>,
}

struct State<B: Backend> {
    idle: Vec<Slot<B>>,
    queue: VecDeque<Job>,
    /// Per slot: cached tokens after its last request, and its running job's cancel handle.
    cached: Vec<usize>,
    running: Vec<Option<CancelHandle>>,
    context: Vec<usize>,
    closed: bool,
}

struct Shared<B: Backend> {
    state: Mutex<State<B>>,
    /// Signalled when a job is queued, a slot becomes idle, or the scheduler closes.
    changed: Condvar,
    queue_limit: usize,
    queue_timeout: Option<Duration>,
    event_buffer: usize,
    stall_timeout: Duration,
}

impl<B: Backend> Shared<B> {
    /// The state, even if a generation thread panicked while holding the lock (the state is
    /// updated in single steps, so it stays consistent).
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sessions shared by many clients; see the module documentation.
pub struct Scheduler<B: Backend + Send + 'static> {
    shared: Arc<Shared<B>>,
    tokenizer: Arc<smollm3_chat::Tokenizer>,
    template: Arc<smollm3_chat::ChatTemplate>,
    workers: Vec<JoinHandle<()>>,
}

/// Settings of a [`Scheduler`].
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Most requests waiting for a slot (llama-server's `--parallel` slots, Ollama's
    /// `OLLAMA_MAX_QUEUE`).
    pub queue_limit: usize,
    /// Longest a request may wait for a slot (`None`: for ever); then it gets
    /// [`SubmitError::QueueTimeout`].
    pub queue_timeout: Option<Duration>,
    /// Events buffered per request before the generation waits for a slow client.
    pub event_buffer: usize,
    /// Longest the generation waits for a client to take an event once `event_buffer` are
    /// waiting; then it is cancelled and the client gets [`SubmitError::Stalled`].
    pub stall_timeout: Duration,
}

impl Default for SchedulerOptions {
    /// 16 waiting for at most 10 minutes (llama-server's default HTTP timeout), 256 events
    /// buffered (a few hundred tokens: far more than a client that reads at all falls
    /// behind), a minute for a client that stopped reading.
    fn default() -> Self {
        SchedulerOptions {
            queue_limit: 16,
            queue_timeout: Some(Duration::from_secs(600)),
            event_buffer: 256,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl<B: Backend + Send + 'static> Scheduler<B> {
    /// Starts one generation thread per session. The sessions must share one tokenizer and
    /// template (as `Engine::session` makes them). Errors only if `sessions` is empty.
    pub fn new(sessions: Vec<Session<B>>, options: SchedulerOptions) -> Result<Self, GenError> {
        let first = sessions.first().ok_or_else(|| {
            GenError::InvalidRequest("a scheduler needs at least one session".into())
        })?;
        let tokenizer = first.tokenizer().clone();
        let template = first.template().clone();
        let n = sessions.len();
        let context = sessions.iter().map(Session::context_size).collect();
        let cached = sessions.iter().map(|s| s.cached_tokens().len()).collect();
        let idle = sessions
            .into_iter()
            .enumerate()
            .map(|(id, session)| Slot { id, session })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                idle,
                queue: VecDeque::new(),
                cached,
                running: vec![None; n],
                context,
                closed: false,
            }),
            changed: Condvar::new(),
            queue_limit: options.queue_limit,
            queue_timeout: options.queue_timeout,
            event_buffer: options.event_buffer.max(1),
            stall_timeout: options.stall_timeout,
        });
        let mut workers = (0..n)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("smollm3-slot-{i}"))
                    .spawn(move || work(&shared))
                    .map_err(|e| GenError::Backend(format!("starting a generation thread: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if shared.queue_timeout.is_some() {
            let shared = shared.clone();
            let janitor = std::thread::Builder::new()
                .name("smollm3-queue-timer".into())
                .spawn(move || expire_waiting(&shared))
                .map_err(|e| GenError::Backend(format!("starting the queue timer: {e}")))?;
            workers.push(janitor);
        }
        Ok(Scheduler {
            shared,
            tokenizer,
            template,
            workers,
        })
    }

    /// Queues `request`; its events arrive on the ticket's receiver. Fails at once when the
    /// queue is full or the scheduler is closed.
    pub fn submit(&self, request: GenerateRequest) -> Result<Ticket, SubmitError> {
        // Encoded here, off the lock: only used to pick the slot, so a prompt that does not
        // encode still goes through and fails with its error on the slot.
        let prompt_ids = request
            .prompt
            .encode(&self.tokenizer, &self.template)
            .unwrap_or_default();
        // One place more than the buffer: the last is kept for a final message (see
        // `hand_over`).
        let (events, receiver) = mpsc::channel(self.shared.event_buffer + 1);
        let mut state = self.shared.lock();
        if state.closed {
            return Err(SubmitError::Closed);
        }
        state.queue.retain(|job| !job.events.is_closed());
        if state.queue.len() >= self.shared.queue_limit {
            return Err(SubmitError::QueueFull {
                limit: self.shared.queue_limit,
            });
        }
        let queue_position = state.queue.len();
        state.queue.push_back(Job {
            request,
            queued_at: Instant::now(),
            prompt_ids,
            events,
        });
        drop(state);
        self.shared.changed.notify_all();
        Ok(Ticket {
            events: receiver,
            queue_position,
        })
    }

    /// The tokenizer the sessions share.
    pub fn tokenizer(&self) -> &Arc<smollm3_chat::Tokenizer> {
        &self.tokenizer
    }

    /// The chat template the sessions share.
    pub fn template(&self) -> &Arc<smollm3_chat::ChatTemplate> {
        &self.template
    }

    /// The slots and the queue now.
    pub fn status(&self) -> SchedulerStatus {
        let state = self.shared.lock();
        SchedulerStatus {
            slots: (0..state.cached.len())
                .map(|id| SlotStatus {
                    id,
                    busy: state.running[id].is_some(),
                    cached_tokens: state.cached[id],
                    context: state.context[id],
                })
                .collect(),
            queued: state
                .queue
                .iter()
                .filter(|job| !job.events.is_closed())
                .count(),
        }
    }

    /// Stops taking requests; queued ones still run unless `cancel` is set, in which case
    /// they are dropped and running generations stop at their next token.
    pub fn close(&self, cancel: bool) {
        let mut state = self.shared.lock();
        state.closed = true;
        if cancel {
            state.queue.clear();
            for handle in state.running.iter().flatten() {
                handle.cancel();
            }
        }
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl<B: Backend + Send + 'static> Drop for Scheduler<B> {
    /// Cancels what is running and waits for the generation threads to end: a cancelled
    /// generation stops at its next token, once its client has read (or dropped) the events
    /// it is waiting to hand over.
    fn drop(&mut self) {
        self.close(true);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Which idle slot takes a prompt (an index into `idle`, oldest-idle first):
///
/// 1. one whose whole cache is a prefix of the prompt (a conversation's next turn: nothing is
///    thrown away), the longest;
/// 2. else an empty slot, so another conversation's cache survives for its next turn (two
///    conversations share the long system header, so "longest common prefix" alone would
///    send the second one onto the first one's slot);
/// 3. else the slot sharing the longest prefix, the one idle longest among equals.
fn pick_slot<B: Backend>(idle: &[Slot<B>], prompt: &[u32]) -> usize {
    let shared: Vec<(usize, usize)> = idle
        .iter()
        .map(|slot| {
            let cached = slot.session.cached_tokens();
            (common_prefix(cached, prompt), cached.len())
        })
        .collect();
    let first_max = |keep: &dyn Fn(usize, usize) -> bool| {
        shared
            .iter()
            .enumerate()
            .filter(|(_, &(common, cached))| keep(common, cached))
            .max_by_key(|(i, &(common, _))| (common, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    };
    first_max(&|common, cached| common > 0 && common == cached)
        .or_else(|| first_max(&|_, cached| cached == 0))
        .or_else(|| first_max(&|_, _| true))
        .unwrap_or(0)
}

/// Length of the common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One generation thread: take the oldest request and the idle slot that has the most of its
/// prompt cached, run it, give the slot back; until the scheduler closes and the queue is
/// empty.
fn work<B: Backend>(shared: &Shared<B>) {
    loop {
        let (job, mut slot, cancel) = {
            let mut state = shared.lock();
            loop {
                // A request whose client left while it waited is never started.
                state.queue.retain(|job| !job.events.is_closed());
                if !state.queue.is_empty() && !state.idle.is_empty() {
                    break;
                }
                if state.closed && state.queue.is_empty() {
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            let Some(job) = state.queue.pop_front() else {
                continue;
            };
            let best = pick_slot(&state.idle, &job.prompt_ids);
            let slot = state.idle.remove(best);
            let cancel = job.request.cancel.clone().unwrap_or_default();
            state.running[slot.id] = Some(cancel.clone());
            (job, slot, cancel)
        };

        run(&job, &mut slot.session, cancel, shared.stall_timeout);

        let mut state = shared.lock();
        state.cached[slot.id] = slot.session.cached_tokens().len();
        state.running[slot.id] = None;
        state.idle.push(slot);
        drop(state);
        shared.changed.notify_all();
    }
}

/// The queue's timer: answers [`SubmitError::QueueTimeout`] to requests that waited longer
/// than `queue_timeout` (a thread of its own: when every slot is busy, no worker looks at
/// the queue until one ends, which can be minutes).
fn expire_waiting<B: Backend>(shared: &Shared<B>) {
    let Some(limit) = shared.queue_timeout else {
        return;
    };
    let mut state = shared.lock();
    loop {
        if state.closed && state.queue.is_empty() {
            return;
        }
        let before = state.queue.len();
        state.queue.retain(|job| {
            let waited = job.queued_at.elapsed();
            if waited < limit {
                return true;
            }
            let waited_secs = waited.as_secs();
            let dropped = SubmitError::QueueTimeout { waited_secs };
            let _ = job.events.try_send(JobEvent::Dropped(dropped));
            false
        });
        if state.queue.len() != before {
            shared.changed.notify_all();
        }
        // The queue is in arrival order: its first job expires first.
        let next = state
            .queue
            .front()
            .map(|job| limit.saturating_sub(job.queued_at.elapsed()));
        state = match next {
            Some(wait) => {
                let wait = wait.max(Duration::from_millis(1));
                shared
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// What became of an event handed to a client.
#[derive(Debug, PartialEq, Eq)]
enum Handover {
    Sent,
    /// The client dropped its receiver (it disconnected).
    Gone,
    /// The channel stayed full for the stall timeout.
    Stalled,
}

/// How often a generation looks again at a full channel.
const FULL_CHANNEL_POLL: Duration = Duration::from_millis(2);

/// Sends `event`, waiting at most `stall` while the channel is full. The channel's last
/// place is never used here, so a final message (an error, [`SubmitError::Stalled`]) always
/// fits.
fn hand_over(events: &mpsc::Sender<JobEvent>, event: JobEvent, stall: Duration) -> Handover {
    let deadline = Instant::now() + stall;
    loop {
        if events.is_closed() {
            return Handover::Gone;
        }
        // One sender per channel (this thread), so the places counted here are still free.
        if events.capacity() > 1 {
            return match events.try_send(event) {
                Ok(()) => Handover::Sent,
                Err(_) => Handover::Gone,
            };
        }
        if Instant::now() >= deadline {
            return Handover::Stalled;
        }
        std::thread::sleep(FULL_CHANNEL_POLL);
    }
}

/// Runs one request on `session`, forwarding its events; a closed channel cancels it, and so
/// does a client that takes no event for the stall timeout.
fn run<B: Backend>(job: &Job, session: &mut Session<B>, cancel: CancelHandle, stall: Duration) {
    let request = GenerateRequest {
        cancel: Some(cancel),
        ..job.request.clone()
    };
    let mut ended = false;
    let result = session.generate_with(&request, |event| {
        if ended {
            return ControlFlow::Break(());
        }
        match hand_over(&job.events, JobEvent::Event(event), stall) {
            Handover::Sent => ControlFlow::Continue(()),
            // The client is gone: stop before the next token.
            Handover::Gone => {
                ended = true;
                ControlFlow::Break(())
            }
            Handover::Stalled => {
                ended = true;
                let secs = stall.as_secs();
                let _ = job
                    .events
                    .try_send(JobEvent::Dropped(SubmitError::Stalled { secs }));
                ControlFlow::Break(())
            }
        }
    });
    if let Err(e) = result {
        if !ended {
            let _ = job.events.try_send(JobEvent::Failed(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[5, 6], &[5, 6, 7]), 2);
    }
}
