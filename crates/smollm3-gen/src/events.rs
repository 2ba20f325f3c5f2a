use serde::Serialize;

/// One step of a generation's output, in stream order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Part of the prompt was processed (`processed` of `total` tokens, cached ones included).
    PrefillProgress { processed: usize, total: usize },
    /// Reasoning text (inside `<think>...</think>`, tags and surrounding blank lines removed).
    Reasoning { text: String },
    /// Answer text.
    Answer { text: String },
    /// A finished tool-call span (or a truncated one at the end of the output).
    ToolCall(ToolCallSpan),
    /// The last event.
    Done(Box<Completion>),
}

/// The raw text of a tool call, from its opening tag through its closing tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCallSpan {
    pub raw: String,
    /// False when the output ended before the closing tag.
    pub complete: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
    /// The model ended its turn after at least one complete tool call.
    ToolCalls,
    /// Cancelled through a [`crate::CancelHandle`].
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts and timings of one generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the session's cache and not processed again.
    pub cached_tokens: usize,
    /// Prompt tokens run through the model (`prompt_tokens - cached_tokens`, unless
    /// cancelled during prefill).
    pub prefilled_tokens: usize,
    /// Tokens produced (sampled or forced), the end-of-generation token included.
    pub generated_tokens: usize,
    /// Of those, tokens inside the reasoning block.
    pub reasoning_tokens: usize,
    /// Messages dropped to fit the context ([`crate::ContextOverflow::DropOldestTurns`]).
    pub dropped_messages: usize,
    /// From the `generate` call to the first generated token.
    pub time_to_first_token_ms: f64,
    pub prefill_ms: f64,
    /// From the first generated token to the end.
    pub decode_ms: f64,
    pub prefill_tokens_per_second: f64,
    /// Tokens after the first, per second of decode time.
    pub decode_tokens_per_second: f64,
    /// The sampling seed used (reproduce a run by passing it back).
    pub seed: u64,
    /// Tokens guessed by prompt lookup and checked by the model ([`crate::draft`]), and of
    /// those, the ones it agreed with (each saved a decode step).
    pub draft_tokens: usize,
    pub draft_accepted: usize,
}

/// The end of a generation: why it stopped, what was matched, the statistics, and the whole
/// output collected (convenient for callers that don't stream).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub finish_reason: FinishReason,
    /// The stop string or end-of-generation token text that ended it, if any.
    pub stopped_by: Option<String>,
    pub reasoning: String,
    pub answer: String,
    pub tool_calls: Vec<ToolCallSpan>,
    pub stats: Stats,
}
