//! Answers being written: one per conversation at most. A task reads the generation's events
//! from the scheduler (the same queue the API uses) into a [`LiveState`] that any number of
//! page streams watch, so a browser that reconnects sees the same generation continue, never
//! a second one. When the last watcher leaves and none comes back within a grace period (a
//! closed tab), the generation is cancelled. When it ends, the answer is appended to the
//! conversation file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smollm3_gen::{CancelHandle, Event, FinishReason};
use tokio::sync::watch;

use smollm3_tools::parse::parse_xml;
use smollm3_tools::Registry;

use super::store::{Conversation, Store, Turn, TurnStats};
use crate::{JobEvent, SubmitError, Ticket};

/// Most generations of one answer when tools are on (each may call tools).
pub const MAX_TOOL_ROUNDS: usize = 6;

/// What the server needs to run the model's tool calls and ask again: the tools, and how to
/// submit the conversation for its next round (same settings, same cancel handle).
pub struct Agent {
    pub registry: Arc<Registry>,
    pub resubmit: Resubmit,
}

/// Submits a conversation for its next round (an error is a message for the page).
pub type Resubmit = Box<dyn Fn(&Conversation) -> Result<Ticket, String> + Send + Sync>;

/// A generation to follow: for which conversation, and how it was started.
pub struct Started {
    pub store: Store,
    pub conversation: String,
    pub ticket: Ticket,
    pub cancel: CancelHandle,
    pub thinking: bool,
    /// Tokens a slot holds (for the context meter).
    pub context_size: usize,
    /// Set when the conversation has tools on.
    pub agent: Option<Agent>,
}

/// How long a generation nobody watches keeps running (a page reload reconnects well within
/// it; a closed tab does not).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// What the page shows of an answer being written.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Requests ahead of this one when it was queued.
    pub queue_position: usize,
    /// The first event arrived: the prompt is being processed or the answer written.
    pub started: bool,
    pub reasoning: String,
    pub answer: String,
    /// Raw tool-call spans the model wrote.
    pub tool_calls: Vec<String>,
    /// Earlier rounds of this answer (tools on): the model's turns and the tools' results,
    /// already saved.
    pub earlier: Vec<Turn>,
    pub thinking: bool,
    /// Tokens a slot holds (for the context meter).
    pub context_size: usize,
    /// Seconds of reasoning so far (final once the reasoning block closed).
    pub thought_seconds: f64,
    /// The finished answer as saved (with its statistics).
    pub done: Option<Turn>,
    /// Why it ended without an answer (shown in a banner; not saved).
    pub error: Option<String>,
}

/// One answer being written.
pub struct Live {
    state: Mutex<LiveState>,
    changed: watch::Sender<u64>,
    cancel: CancelHandle,
    watchers: AtomicUsize,
}

impl Live {
    pub fn state(&self) -> LiveState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut LiveState)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
    }

    /// Stops the generation before its next token (the text so far is kept).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(self: &Arc<Self>) -> (watch::Receiver<u64>, Watcher) {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        (
            self.changed.subscribe(),
            Watcher {
                live: Arc::clone(self),
            },
        )
    }

    pub fn is_done(&self) -> bool {
        let state = self.lock();
        state.done.is_some() || state.error.is_some()
    }
}

/// A page stream watching a [`Live`]; when the last one is dropped and nobody comes back
/// within [`ORPHAN_GRACE`], the generation is cancelled.
pub struct Watcher {
    live: Arc<Live>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.live.watchers.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let live = Arc::clone(&self.live);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(ORPHAN_GRACE).await;
                if live.watchers.load(Ordering::SeqCst) == 0 && !live.is_done() {
                    live.stop();
                }
            });
        }
    }
}

/// The running answers, by conversation id.
#[derive(Default)]
pub struct Running {
    by_conversation: Mutex<HashMap<String, Arc<Live>>>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.by_conversation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, conversation: &str) -> Option<Arc<Live>> {
        self.lock().get(conversation).cloned()
    }

    /// Starts following a generation; its answer is saved into the conversation at the end.
    /// Returns the new [`Live`].
    pub fn start(self: &Arc<Self>, started: Started) -> Arc<Live> {
        let Started {
            store,
            conversation,
            ticket,
            cancel,
            thinking,
            context_size,
            agent,
        } = started;
        let (changed, _) = watch::channel(0);
        let live = Arc::new(Live {
            state: Mutex::new(LiveState {
                queue_position: ticket.queue_position,
                thinking,
                context_size,
                ..LiveState::default()
            }),
            changed,
            cancel,
            watchers: AtomicUsize::new(0),
        });
        self.lock().insert(conversation.clone(), Arc::clone(&live));
        let running = Arc::clone(self);
        let follower = Arc::clone(&live);
        tokio::spawn(async move {
            follow(&follower, ticket, &store, &conversation, agent).await;
            running.lock().remove(&conversation);
            // Watchers see `done` or `error` after the entry is gone, so a page that
            // reloads then renders the saved conversation.
            follower.changed.send_modify(|v| *v += 1);
        });
        live
    }
}

/// Reads each round's events into the state and saves it; with tools on, runs the calls the
/// model made, saves their results and asks again, up to [`MAX_TOOL_ROUNDS`].
async fn follow(
    live: &Live,
    mut ticket: Ticket,
    store: &Store,
    conversation: &str,
    agent: Option<Agent>,
) {
    for round in 1..=MAX_TOOL_ROUNDS {
        let Some((turn, finish)) = one_round(live, &mut ticket).await else {
            return;
        };
        let calls: Vec<_> = match &agent {
            Some(_) if finish == FinishReason::ToolCalls && round < MAX_TOOL_ROUNDS => live
                .state()
                .tool_calls
                .iter()
                .flat_map(|raw| parse_xml(raw))
                .collect(),
            _ => Vec::new(),
        };
        let mut saved = vec![turn.clone()];
        if let Some(agent) = agent.as_ref().filter(|_| !calls.is_empty()) {
            for call in calls {
                let registry = Arc::clone(&agent.registry);
                // Tools may read files or wait on their timeout: off the async threads.
                let outcome = tokio::task::spawn_blocking(move || registry.run(&call)).await;
                let (name, content) = match outcome {
                    Ok(outcome) => (outcome.name.clone(), outcome.to_message_content()),
                    Err(e) => ("tool".to_string(), format!("{{\"error\": \"{e}\"}}")),
                };
                saved.push(Turn::tool(&name, content));
            }
        }
        let conversation_now = store.load(conversation).and_then(|mut c| {
            c.turns.extend(saved.iter().cloned());
            store.touch_and_save(&mut c).map(|()| c)
        });
        let conversation_now = match conversation_now {
            Ok(c) => c,
            Err(e) => {
                live.update(|s| s.error = Some(format!("The answer could not be saved: {e}")));
                return;
            }
        };
        let Some(agent) = agent.as_ref().filter(|_| saved.len() > 1) else {
            live.update(|s| s.done = Some(turn));
            return;
        };
        // The next round: what this one showed stays on the page above it.
        match (agent.resubmit)(&conversation_now) {
            Ok(next) => {
                ticket = next;
                live.update(|s| {
                    s.earlier.extend(saved);
                    s.reasoning.clear();
                    s.answer.clear();
                    s.tool_calls.clear();
                    s.thought_seconds = 0.0;
                });
            }
            Err(e) => {
                live.update(|s| s.error = Some(e));
                return;
            }
        }
    }
}

/// One generation: events into the state until it ends; the answer as a turn, or `None`
/// after an error (already in the state).
async fn one_round(live: &Live, ticket: &mut Ticket) -> Option<(Turn, FinishReason)> {
    let mut reasoning_since: Option<Instant> = None;
    loop {
        let event = match ticket.events.recv().await {
            Some(JobEvent::Event(event)) => event,
            Some(JobEvent::Failed(e)) => {
                let message = match &e {
                    smollm3_gen::GenError::PromptTooLong {
                        prompt_tokens,
                        context,
                    } => format!(
                        "The conversation is too long for the context ({prompt_tokens} tokens, \
                         the context holds {context}): start a new chat, or edit an earlier \
                         message to continue from there."
                    ),
                    other => format!("The model failed: {other}"),
                };
                live.update(|s| s.error = Some(message));
                return None;
            }
            Some(JobEvent::Dropped(e)) => {
                // Waited past the queue's limit (this reader never stalls).
                let message = match e {
                    SubmitError::QueueTimeout { waited_secs } => format!(
                        "The server is busy: this answer waited {waited_secs} s for a free slot. \
                         Try again in a moment."
                    ),
                    other => format!("The answer was stopped: {other}."),
                };
                live.update(|s| s.error = Some(message));
                return None;
            }
            None => {
                live.update(|s| s.error = Some("The server is shutting down.".into()));
                return None;
            }
        };
        match event {
            Event::PrefillProgress { .. } => live.update(|s| s.started = true),
            Event::Reasoning { text } => {
                let since = *reasoning_since.get_or_insert_with(Instant::now);
                live.update(|s| {
                    s.started = true;
                    s.reasoning.push_str(&text);
                    s.thought_seconds = since.elapsed().as_secs_f64();
                });
            }
            Event::Answer { text } => live.update(|s| {
                s.started = true;
                s.answer.push_str(&text);
            }),
            Event::ToolCall(span) => live.update(|s| s.tool_calls.push(span.raw)),
            Event::Done(completion) => {
                let finish = match completion.finish_reason {
                    FinishReason::Cancelled => "cancelled",
                    other => other.as_str(),
                };
                let s = live.lock();
                let mut turn = Turn {
                    role: "assistant".into(),
                    content: s.answer.clone(),
                    reasoning: s.reasoning.clone(),
                    thinking: s.thinking,
                    stats: Some(TurnStats::from_stats(
                        &completion.stats,
                        finish,
                        s.thought_seconds,
                    )),
                };
                // Tool calls the model wrote stay in the saved text, as the model wrote them
                // (the template shows the model only the text).
                for raw in &s.tool_calls {
                    if !turn.content.is_empty() {
                        turn.content.push('\n');
                    }
                    turn.content.push_str(raw);
                }
                return Some((turn, completion.finish_reason));
            }
        }
    }
}
