//! The generation loop with a scripted model: thinking split, stops, budgets, tool-call spans,
//! cancellation, context handling and cache bookkeeping, checked exactly.

mod common;

use common::{chat, done, events, template, texts, tokenizer};
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{
    CancelHandle, ContextOverflow, Event, FinishReason, GenError, GenerateRequest, Prompt,
    SamplingParams, ScriptedBackend, Session,
};

fn session(context: usize, replies: &[&str]) -> Session<ScriptedBackend> {
    let tok = tokenizer();
    let backend = ScriptedBackend::from_texts(&tok, context, replies).unwrap();
    Session::with_backend(backend, tok, template())
}

fn greedy(prompt: ChatRequest) -> GenerateRequest {
    let mut r = GenerateRequest::chat(prompt);
    r.sampling = SamplingParams::greedy();
    r
}

#[test]
fn thinking_is_split_from_the_answer() {
    let mut s = session(
        512,
        &["<think>\nThe user greets me.\nBe kind.\n</think>\nHello there!"],
    );
    let ev = events(s.generate(&greedy(chat("Hi", true))).unwrap());
    let (reasoning, answer) = texts(&ev);
    assert_eq!(reasoning, "The user greets me.\nBe kind.");
    assert_eq!(answer, "Hello there!");
    let c = done(&ev);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.stopped_by.as_deref(), Some("<|im_end|>"));
    assert_eq!(c.reasoning, reasoning);
    assert_eq!(c.answer, answer);
    // Reasoning streams before the answer, and there is more than one delta (streaming).
    let first_answer = ev.iter().position(|e| matches!(e, Event::Answer { .. }));
    let last_reasoning = ev
        .iter()
        .rposition(|e| matches!(e, Event::Reasoning { .. }));
    assert!(last_reasoning < first_answer);
    assert!(
        ev.iter()
            .filter(|e| matches!(e, Event::Answer { .. }))
            .count()
            > 1
    );
    // `<think>`, the reasoning and `</think>` count as reasoning tokens; not the answer.
    let tok = tokenizer();
    let think_tokens = tok
        .encode("<think>\nThe user greets me.\nBe kind.\n", true)
        .unwrap()
        .len();
    assert!(c.stats.reasoning_tokens >= think_tokens - 1);
    assert!(c.stats.reasoning_tokens < c.stats.generated_tokens);
}

#[test]
fn no_think_prompt_reports_no_reasoning() {
    let mut s = session(512, &["Hello <b>world</b>"]);
    let request = greedy(chat("Hi", false));
    let prompt = s.encode_prompt(&request.prompt).unwrap();
    let text = tokenizer().decode(&prompt, false).unwrap();
    assert!(
        text.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n"),
        "{text:?}"
    );
    let ev = events(s.generate(&request).unwrap());
    assert!(!ev.iter().any(|e| matches!(e, Event::Reasoning { .. })));
    assert_eq!(texts(&ev).1, "Hello <b>world</b>");
    assert_eq!(done(&ev).stats.reasoning_tokens, 0);
}

#[test]
fn unclosed_thinking_is_all_reasoning_and_ends_by_length() {
    let mut s = session(
        512,
        &["<think>\nStep one. Step two. Step three. Step four."],
    );
    let mut request = greedy(chat("Think", true));
    request.sampling.max_tokens = Some(8);
    let ev = events(s.generate(&request).unwrap());
    let (reasoning, answer) = texts(&ev);
    assert!(answer.is_empty());
    assert!("Step one. Step two. Step three. Step four.".starts_with(&reasoning));
    assert!(!reasoning.is_empty());
    let c = done(&ev);
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(c.stats.generated_tokens, 8);
}

#[test]
fn stop_string_across_tokens_is_not_emitted() {
    let reply = "The answer is 42. STOP HERE and never this.";
    let tok = tokenizer();
    // The stop string really spans several tokens.
    assert!(tok.encode("42. STOP", false).unwrap().len() > 1);
    let mut s = session(512, &[reply]);
    let mut request = greedy(chat("Q", false));
    request.stop = vec!["never".into(), "42. STOP".into()];
    let ev = events(s.generate(&request).unwrap());
    assert_eq!(texts(&ev).1, "The answer is ");
    let c = done(&ev);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.stopped_by.as_deref(), Some("42. STOP"));
    // Generation ended at the token completing the stop, not at the end of the reply.
    assert!(c.stats.generated_tokens < tok.encode(reply, false).unwrap().len());
}

#[test]
fn a_partial_stop_string_at_the_end_is_emitted() {
    let mut s = session(512, &["Almost STO"]);
    let mut request = greedy(chat("Q", false));
    request.stop = vec!["STOP".into()];
    let ev = events(s.generate(&request).unwrap());
    assert_eq!(texts(&ev).1, "Almost STO");
    assert_eq!(done(&ev).stopped_by.as_deref(), Some("<|im_end|>"));
}

#[test]
fn reasoning_budget_forces_the_end_of_thinking() {
    let tok = tokenizer();
    let reply = "<think>\none two three four five six seven eight nine ten";
    let script = tok.encode(reply, true).unwrap();
    let mut s = session(512, &[reply]);
    let mut request = greedy(chat("Count", true));
    request.reasoning_budget = Some(4);
    request.sampling.max_tokens = Some(30);
    let ev = events(s.generate(&request).unwrap());
    let c = done(&ev);
    // `<think>` and 4 reasoning tokens from the model, then the forced `\n</think>\n`.
    let close = tok.encode("\n</think>\n", true).unwrap();
    let out = &s.cached_tokens()[c.stats.prompt_tokens..];
    assert_eq!(out[..5], script[..5]);
    assert_eq!(out[5..5 + close.len()], close[..]);
    assert_eq!(
        c.reasoning,
        tok.decode(&script[1..5], false).unwrap().trim()
    );
    assert!(!c.answer.is_empty());
    assert!(!c.reasoning.contains("</think>") && !c.answer.contains("</think>"));
}

#[test]
fn reasoning_budget_zero_turns_thinking_off() {
    let mut s = session(512, &["Plain answer"]);
    let mut request = greedy(chat("Q", true));
    request.reasoning_budget = Some(0);
    let prompt = s.encode_prompt(&Prompt::Chat({
        let mut c = chat("Q", false);
        c.enable_thinking = Some(false);
        c
    }));
    let ev = events(s.generate(&request).unwrap());
    assert_eq!(texts(&ev), (String::new(), "Plain answer".to_string()));
    let expected = prompt.unwrap();
    assert_eq!(&s.cached_tokens()[..expected.len()], expected.as_slice());
}

#[test]
fn tool_call_spans_are_reported_whole() {
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut s = session(1024, &[&format!("Let me check.\n{call}")]);
    let mut c = chat("Weather in Paris?", false);
    c.tools = Some(minijinja::Value::from_serialize(serde_json::json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    ])));
    let ev = events(s.generate(&greedy(c)).unwrap());
    let calls: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall(span) => Some(span.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].raw, call);
    assert!(calls[0].complete);
    assert_eq!(texts(&ev).1, "Let me check.\n");
    assert_eq!(done(&ev).finish_reason, FinishReason::ToolCalls);
}

#[test]
fn a_truncated_tool_call_is_reported() {
    let mut s = session(
        1024,
        &["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa"],
    );
    let mut request = greedy(chat("Weather?", false));
    request.tool_tags = Some(vec![("<tool_call>".into(), "</tool_call>".into())]);
    request.sampling.max_tokens = Some(12);
    let ev = events(s.generate(&request).unwrap());
    let c = done(&ev);
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(c.tool_calls.len(), 1);
    assert!(!c.tool_calls[0].complete);
    assert!(c.tool_calls[0].raw.starts_with("<tool_call>"));
}

#[test]
fn without_tools_tool_tags_are_plain_answer() {
    let mut s = session(1024, &["<code>print(1)</code>"]);
    let ev = events(s.generate(&greedy(chat("Q", false))).unwrap());
    assert_eq!(texts(&ev).1, "<code>print(1)</code>");
    assert_eq!(done(&ev).finish_reason, FinishReason::Stop);
}

#[test]
fn cancel_stops_within_one_token_and_the_session_stays_usable() {
    let mut s = session(
        1024,
        &["one two three four five six seven eight", "Fresh reply"],
    );
    let cancel = CancelHandle::new();
    let mut request = greedy(chat("Count", false));
    request.cancel = Some(cancel.clone());
    let mut seen_answer = 0;
    let mut all = Vec::new();
    for event in s.generate(&request).unwrap() {
        let event = event.unwrap();
        if matches!(event, Event::Answer { .. }) {
            seen_answer += 1;
            if seen_answer == 2 {
                cancel.cancel();
            }
        }
        all.push(event);
    }
    let c = done(&all);
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    // Nothing was produced after the cancel.
    let after_cancel = all
        .iter()
        .skip_while(|e| !matches!(e, Event::Answer { .. }))
        .filter(|e| matches!(e, Event::Answer { .. }))
        .count();
    assert_eq!(after_cancel, 2);
    // The cache holds exactly the prompt and the tokens fed back so far.
    assert_eq!(s.cached_tokens(), s.backend().tokens());
    assert_eq!(
        s.cached_tokens().len(),
        c.stats.prompt_tokens + c.stats.generated_tokens - 1
    );
    // The next generation works and reuses the cached prompt.
    cancel.reset();
    let ev = events(s.generate(&request).unwrap());
    assert_eq!(texts(&ev).1, "Fresh reply");
    assert_eq!(
        done(&ev).stats.cached_tokens,
        done(&ev).stats.prompt_tokens - 1
    );
}

#[test]
fn cancel_during_prefill_keeps_what_was_processed() {
    let mut s = session(4096, &["never"]);
    let cancel = CancelHandle::new();
    let long = "word ".repeat(300);
    let mut request = greedy(chat(&long, false));
    request.cancel = Some(cancel.clone());
    let mut generation = s.generate(&request).unwrap();
    let total = generation.prompt_tokens();
    assert!(total > 2 * smollm3_gen::PREFILL_CHUNK);
    match generation.next() {
        Some(Ok(Event::PrefillProgress {
            processed,
            total: t,
        })) => {
            assert_eq!((processed, t), (smollm3_gen::PREFILL_CHUNK, total));
        }
        other => panic!("expected progress, got {other:?}"),
    }
    cancel.cancel();
    let rest: Vec<Event> = generation.map(Result::unwrap).collect();
    let c = done(&rest);
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    assert_eq!(c.stats.generated_tokens, 0);
    assert_eq!(c.stats.prefilled_tokens, smollm3_gen::PREFILL_CHUNK);
    assert_eq!(s.cached_tokens().len(), smollm3_gen::PREFILL_CHUNK);
}

/// A scripted model whose `call`-th call sees a cancel arrive while it runs and then asks
/// `interrupt`, as the real model does before each layer.
struct CancelledDuringCall {
    inner: ScriptedBackend,
    cancel: CancelHandle,
    call: usize,
    calls: usize,
}

impl smollm3_gen::Backend for CancelledDuringCall {
    fn context_size(&self) -> usize {
        self.inner.context_size()
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn cached_len(&self) -> usize {
        self.inner.cached_len()
    }
    fn truncate(&mut self, len: usize) -> smollm3_gen::Result<()> {
        self.inner.truncate(len)
    }
    fn forward(&mut self, tokens: &[u32]) -> smollm3_gen::Result<Vec<f32>> {
        self.inner.forward(tokens)
    }
    fn forward_interruptible(
        &mut self,
        tokens: &[u32],
        interrupt: &dyn Fn() -> bool,
    ) -> smollm3_gen::Result<Option<Vec<f32>>> {
        self.calls += 1;
        if self.calls == self.call {
            self.cancel.cancel();
            if interrupt() {
                return Ok(None);
            }
        }
        self.inner.forward(tokens).map(Some)
    }
    fn start_generation(&mut self, prompt_len: usize) {
        self.inner.start_generation(prompt_len)
    }
}

#[test]
fn a_cancel_during_a_prompt_chunk_stops_it_and_caches_none_of_it() {
    let tok = tokenizer();
    let cancel = CancelHandle::new();
    let backend = CancelledDuringCall {
        inner: ScriptedBackend::from_texts(&tok, 4096, &["never"]).unwrap(),
        cancel: cancel.clone(),
        call: 2,
        calls: 0,
    };
    let mut s = Session::with_backend(backend, tok, template());
    let mut request = greedy(chat(&"word ".repeat(300), false));
    request.cancel = Some(cancel.clone());
    let ev: Vec<Event> = s.generate(&request).unwrap().map(Result::unwrap).collect();
    let progress = ev
        .iter()
        .filter(|e| matches!(e, Event::PrefillProgress { .. }))
        .count();
    assert_eq!(progress, 1, "only the first chunk completed");
    let c = done(&ev);
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    assert_eq!(c.stats.generated_tokens, 0);
    assert_eq!(c.stats.prefilled_tokens, smollm3_gen::PREFILL_CHUNK);
    assert_eq!(s.cached_tokens().len(), smollm3_gen::PREFILL_CHUNK);
    assert_eq!(s.backend().inner.tokens().len(), smollm3_gen::PREFILL_CHUNK);
}

#[test]
fn the_next_turn_prefills_only_its_new_tokens() {
    let mut s = session(
        2048,
        &["Paris is the capital.", "About two million people."],
    );
    let mut conversation = chat("What is the capital of France?", false);
    let first = s
        .generate(&greedy(conversation.clone()))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(first.stats.cached_tokens, 0);
    assert_eq!(first.stats.prefilled_tokens, first.stats.prompt_tokens);

    conversation.push(Message::assistant(&first.answer));
    conversation.push(Message::user("How many people live there?"));
    let calls_before = s.backend().forward_calls().len();
    let second = s
        .generate(&greedy(conversation.clone()))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(second.answer, "About two million people.");
    let st = &second.stats;
    // Everything up to the end of the first answer is reused.
    assert!(st.cached_tokens >= first.stats.prompt_tokens, "{st:?}");
    assert_eq!(st.prefilled_tokens, st.prompt_tokens - st.cached_tokens);
    // The backend really only saw the new tokens (prefill) and one per generated token.
    let fed: usize = s.backend().forward_calls()[calls_before..].iter().sum();
    assert_eq!(fed, st.prefilled_tokens + st.generated_tokens - 1);
}

#[test]
fn prompt_over_the_context_is_a_clear_error() {
    let mut s = session(64, &["x"]);
    let err = match s.generate(&greedy(chat(&"long text ".repeat(40), false))) {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    match &err {
        GenError::PromptTooLong {
            prompt_tokens,
            context,
        } => {
            assert_eq!(*context, 64);
            assert!(*prompt_tokens > 64);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("tokens") && msg.contains("64"), "{msg}");
}

#[test]
fn dropping_oldest_turns_keeps_system_and_last_question() {
    let mut s = session(200, &["ok"]);
    let mut c = ChatRequest {
        add_generation_prompt: true,
        enable_thinking: Some(false),
        ..Default::default()
    };
    c.push(Message::system("Be brief."));
    for i in 0..6 {
        c.push(Message::user(format!(
            "Question number {i} {}",
            "padding ".repeat(10)
        )));
        c.push(Message::assistant(format!(
            "Answer number {i} {}",
            "padding ".repeat(10)
        )));
    }
    c.push(Message::user("Final question?"));
    let mut request = greedy(c.clone());
    assert!(matches!(
        s.generate(&request),
        Err(GenError::PromptTooLong { .. })
    ));
    request.overflow = ContextOverflow::DropOldestTurns;
    request.sampling.max_tokens = Some(10);
    let completion = s.generate(&request).unwrap().complete().unwrap();
    let st = &completion.stats;
    assert!(
        st.dropped_messages > 0 && st.dropped_messages.is_multiple_of(2),
        "{st:?}"
    );
    assert!(st.prompt_tokens + 10 <= 200);
    let prompt = tokenizer()
        .decode(&s.cached_tokens()[..st.prompt_tokens], false)
        .unwrap();
    assert!(prompt.contains("Be brief."));
    assert!(prompt.contains("Final question?"));
    assert!(!prompt.contains("Question number 0"));
    assert!(prompt.contains("Question number 5"));
}

#[test]
fn context_full_mid_stream_ends_with_length() {
    let mut s = session(120, &[&"la ".repeat(200)]);
    let c = s
        .generate(&greedy(chat("Sing", false)))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(s.cached_tokens().len(), 120);
    assert_eq!(c.stats.prompt_tokens + c.stats.generated_tokens, 121);
}

#[test]
fn bad_requests_fail_before_streaming() {
    let mut s = session(128, &["x"]);
    let mut r = greedy(chat("Q", false));
    r.sampling.top_p = 1.5;
    assert!(matches!(s.generate(&r), Err(GenError::InvalidSampling(_))));
    let r = GenerateRequest::new(Prompt::Tokens(vec![1, 999_999]));
    let err = s.generate(&r).err().expect("out-of-vocabulary token");
    assert!(err.to_string().contains("999999"), "{err}");
    let r = GenerateRequest::new(Prompt::Tokens(vec![]));
    assert!(matches!(s.generate(&r), Err(GenError::InvalidRequest(_))));
    let mut r = greedy(chat("Q", false));
    r.sampling.max_tokens = Some(0);
    assert!(matches!(s.generate(&r), Err(GenError::InvalidRequest(_))));
}

#[test]
fn control_tokens_print_nothing_but_count() {
    let tok = tokenizer();
    let bos = tok
        .special_token("<|begin_of_text|>")
        .expect("bos is special");
    let mut s = session(512, &["Hi<|begin_of_text|> there"]);
    let c = s
        .generate(&greedy(chat("Q", false)))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(c.answer, "Hi there");
    assert!(s.cached_tokens().contains(&bos));
}

#[test]
fn an_answer_prefix_is_forced_where_the_answer_starts() {
    // Thinking off: the prefix comes first, whatever the model would have said; it is made of
    // forced tokens, so the scripted reply resumes after as many positions.
    let prefix = "<tool_call>\n{\"name\": \"";
    let mut s = session(512, &["Hello there, how are you today?"]);
    let mut r = greedy(chat("Q", false));
    r.answer_prefix = Some(prefix.to_string());
    r.tool_tags = Some(vec![("<tool_call>".into(), "</tool_call>".into())]);
    let ev = events(s.generate(&r).unwrap());
    let c = done(&ev);
    let spans: String = c.tool_calls.iter().map(|t| t.raw.as_str()).collect();
    assert!(spans.starts_with(prefix), "{c:?}");
    assert!(!c.answer.contains("Hello"), "{c:?}");

    // Thinking on: the reasoning stays free, the prefix follows `</think>`.
    let mut s = session(512, &["<think>\nLet me see.\n</think>\nPlain words here."]);
    let mut r = greedy(chat("Q", true));
    r.answer_prefix = Some("Answer: ".to_string());
    let c = s.generate(&r).unwrap().complete().unwrap();
    assert_eq!(c.reasoning, "Let me see.");
    assert!(c.answer.starts_with("Answer: "), "{:?}", c.answer);
}
