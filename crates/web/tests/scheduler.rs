//! The scheduler on scripted sessions: order, the bounded queue, cancellation by a dropped
//! receiver, and a follow-up turn landing on the slot that holds its prefix.

mod common;

use std::time::{Duration, Instant};

use common::scheduler;
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{Completion, Event, GenerateRequest};
use smollm3_web::{JobEvent, SchedulerOptions, SubmitError, Ticket};

fn chat(system: &str, turns: &[&str]) -> GenerateRequest {
    let mut chat = ChatRequest {
        add_generation_prompt: true,
        enable_thinking: Some(false),
        ..Default::default()
    };
    chat.push(Message::system(system));
    for (i, text) in turns.iter().enumerate() {
        chat.push(if i % 2 == 0 {
            Message::user(*text)
        } else {
            Message::assistant(*text)
        });
    }
    GenerateRequest {
        sampling: smollm3_gen::SamplingParams::greedy(),
        ..GenerateRequest::chat(chat)
    }
}

/// The answer and the final result of a ticket, read to the end.
fn finish(mut ticket: Ticket) -> (String, Completion) {
    let mut answer = String::new();
    loop {
        match ticket.events.blocking_recv() {
            Some(JobEvent::Event(Event::Answer { text })) => answer.push_str(&text),
            Some(JobEvent::Event(Event::Done(done))) => return (answer, *done),
            Some(JobEvent::Event(_)) => {}
            Some(JobEvent::Failed(e)) => panic!("generation failed: {e}"),
            Some(JobEvent::Dropped(e)) => panic!("dropped by the scheduler: {e}"),
            None => panic!("the channel closed before Done"),
        }
    }
}

/// Waits (at most 10 s) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The ticket's next event, waiting at most 10 s (a test fails rather than hangs).
fn next_event(ticket: &mut Ticket) -> Option<JobEvent> {
    let start = Instant::now();
    loop {
        match ticket.events.try_recv() {
            Ok(event) => return Some(event),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no event within 10 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn requests_run_in_order_and_the_queue_is_bounded() {
    let options = SchedulerOptions {
        queue_limit: 2,
        event_buffer: 1,
        ..SchedulerOptions::default()
    };
    let s = scheduler(1, &["first", "second", "third", "fourth"], options);
    // Nobody reads A's events yet: its slot stays busy (the generation waits on the client).
    let a = s.submit(chat("S", &["a"])).unwrap();
    eventually("A running", || s.status().slots[0].busy);
    let b = s.submit(chat("S", &["b"])).unwrap();
    let c = s.submit(chat("S", &["c"])).unwrap();
    assert_eq!(
        (a.queue_position, b.queue_position, c.queue_position),
        (0, 0, 1)
    );
    assert_eq!(s.status().queued, 2);
    assert_eq!(
        s.submit(chat("S", &["d"])).unwrap_err(),
        SubmitError::QueueFull { limit: 2 }
    );
    assert_eq!(finish(a).0, "first");
    assert_eq!(finish(b).0, "second");
    assert_eq!(finish(c).0, "third");
    // Room again.
    assert_eq!(finish(s.submit(chat("S", &["d"])).unwrap()).0, "fourth");
}

#[test]
fn a_dropped_receiver_cancels_and_frees_the_slot() {
    let long = "word ".repeat(300);
    let options = SchedulerOptions {
        queue_limit: 4,
        event_buffer: 1,
        ..SchedulerOptions::default()
    };
    let s = scheduler(1, &[long.as_str(), "next", "after"], options);
    let mut a = s.submit(chat("S", &["a"])).unwrap();
    // Read until the answer starts, then hang up.
    loop {
        if let Some(JobEvent::Event(Event::Answer { .. })) = a.events.blocking_recv() {
            break;
        }
    }
    // B waits behind A; C's client leaves while it waits, so C is never started.
    let b = s.submit(chat("S", &["b"])).unwrap();
    let c = s.submit(chat("S", &["c"])).unwrap();
    drop(c);
    drop(a);
    let (answer, done) = finish(b);
    assert_eq!(answer, "next", "B got the reply after A's (C never ran)");
    assert_eq!(done.finish_reason.as_str(), "stop");
    eventually("slot idle", || !s.status().slots[0].busy);
    // A stopped early: its slot did not process the 300-word reply.
    let prompt_b = done.stats.prompt_tokens;
    assert!(s.status().slots[0].cached_tokens < prompt_b + 300);
    assert_eq!(finish(s.submit(chat("S", &["d"])).unwrap()).0, "after");
}

#[test]
fn a_follow_up_turn_goes_to_the_slot_that_holds_its_prefix() {
    let s = scheduler(2, &["Paris.", "Rome."], SchedulerOptions::default());
    let (x_answer, x1) = finish(
        s.submit(chat("You are X.", &["Capital of France?"]))
            .unwrap(),
    );
    assert_eq!(x1.stats.cached_tokens, 0);
    // X ran on slot 0 (the first idle one); what it processed stays there.
    eventually("X's slot idle", || !s.status().slots[0].busy);
    let x_cached = s.status().slots[0].cached_tokens;
    assert!(
        x_cached > x1.stats.prompt_tokens,
        "the answer is cached too"
    );
    // Another conversation (same template header) takes the empty slot, not X's.
    let (_, y1) = finish(
        s.submit(chat("You are Y.", &["Capital of Italy?"]))
            .unwrap(),
    );
    assert_eq!(y1.stats.cached_tokens, 0);
    eventually("both slots idle", || {
        s.status().slots.iter().all(|slot| !slot.busy)
    });
    let slots = s.status().slots;
    assert!(slots.iter().all(|slot| slot.cached_tokens > 0), "{slots:?}");
    // X's next turn reuses everything X's slot processed: the prompt and the answer.
    let (_, x2) = finish(
        s.submit(chat(
            "You are X.",
            &["Capital of France?", &x_answer, "And of Spain?"],
        ))
        .unwrap(),
    );
    assert_eq!(x2.stats.cached_tokens, x_cached, "{:?}", x2.stats);
}

#[test]
fn a_failing_request_reports_its_error_and_the_slot_goes_on() {
    let s = scheduler(1, &["ok"], SchedulerOptions::default());
    let mut too_long = GenerateRequest::new(smollm3_gen::Prompt::Tokens(vec![1; 5000]));
    too_long.sampling.max_tokens = Some(1);
    let mut t = s.submit(too_long).unwrap();
    match t.events.blocking_recv() {
        Some(JobEvent::Failed(e)) => assert!(e.to_string().contains("5000 tokens"), "{e}"),
        other => panic!("expected the prompt to be refused, got {other:?}"),
    }
    assert_eq!(finish(s.submit(chat("S", &["q"])).unwrap()).0, "ok");
}

#[test]
fn closing_refuses_new_requests_and_cancels_running_ones() {
    let long = "word ".repeat(300);
    let options = SchedulerOptions {
        queue_limit: 4,
        event_buffer: 1,
        ..SchedulerOptions::default()
    };
    let s = scheduler(1, &[long.as_str()], options);
    let a = s.submit(chat("S", &["a"])).unwrap();
    eventually("A running", || s.status().slots[0].busy);
    s.close(true);
    assert_eq!(
        s.submit(chat("S", &["b"])).unwrap_err(),
        SubmitError::Closed
    );
    // A stops at its next token: the client reads a cancelled, short answer.
    let (answer, done) = finish(a);
    assert_eq!(done.finish_reason.as_str(), "cancelled");
    assert!(answer.len() < long.len(), "{answer}");
    // Dropping the scheduler joins its threads (this returns).
    drop(s);
}

#[test]
fn a_request_that_waits_too_long_for_a_slot_is_answered_busy() {
    let options = SchedulerOptions {
        queue_limit: 4,
        queue_timeout: Some(Duration::from_millis(300)),
        event_buffer: 1,
        ..SchedulerOptions::default()
    };
    let s = scheduler(1, &["first", "second", "third"], options);
    // Nobody reads A's events: the only slot stays busy.
    let a = s.submit(chat("S", &["a"])).unwrap();
    eventually("A running", || s.status().slots[0].busy);
    let mut b = s.submit(chat("S", &["b"])).unwrap();
    match next_event(&mut b) {
        Some(JobEvent::Dropped(SubmitError::QueueTimeout { .. })) => {}
        other => panic!("expected a queue timeout, got {other:?}"),
    }
    assert!(b.events.blocking_recv().is_none(), "nothing after it");
    assert_eq!(s.status().queued, 0, "B left the queue");
    // A was not disturbed, and B's place went to the next request.
    assert_eq!(finish(a).0, "first");
    assert_eq!(finish(s.submit(chat("S", &["c"])).unwrap()).0, "second");
}

#[test]
fn a_client_that_stops_reading_loses_its_slot_and_is_told_why() {
    let long = "word ".repeat(300);
    let options = SchedulerOptions {
        queue_limit: 4,
        event_buffer: 4,
        stall_timeout: Duration::from_millis(200),
        ..SchedulerOptions::default()
    };
    let s = scheduler(1, &[long.as_str(), "next"], options);
    // A reads nothing; B waits behind it and is answered once A's slot is given up.
    let mut a = s.submit(chat("S", &["a"])).unwrap();
    let mut b = s.submit(chat("S", &["b"])).unwrap();
    let mut answer = String::new();
    loop {
        match next_event(&mut b) {
            Some(JobEvent::Event(Event::Answer { text })) => answer.push_str(&text),
            Some(JobEvent::Event(Event::Done(_))) => break,
            Some(JobEvent::Event(_)) => {}
            other => panic!("B: {other:?}"),
        }
    }
    assert_eq!(answer, "next");
    // A, reading at last, finds what was buffered, then why its answer stopped.
    let mut buffered = 0;
    loop {
        match next_event(&mut a) {
            Some(JobEvent::Event(Event::Done(_))) => panic!("A was not stopped"),
            Some(JobEvent::Event(_)) => buffered += 1,
            Some(JobEvent::Dropped(SubmitError::Stalled { .. })) => break,
            other => panic!("A: {other:?}"),
        }
    }
    assert!(buffered <= 4, "{buffered} events buffered past the limit");
    assert!(next_event(&mut a).is_none(), "nothing after it");
}
