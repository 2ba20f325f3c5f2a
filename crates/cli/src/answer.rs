//! One answer, shared by `run` and `chat`: a plain generation, or the tool loop when tools are
//! set up, printed as it happens.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use smollm3_gen::{Backend, Completion, Event, GenerateRequest, Prompt, Session};
use smollm3_tools::agent::{run_agent, AgentOptions, AgentOutcome};

use crate::args::ToolSetup;
use crate::render::Printer;

/// How an answer ended.
pub enum Answered {
    /// A generation without tools.
    Plain(Box<Completion>),
    /// The tool loop: its rounds, the conversation with the tool turns, the last generation.
    Tools(Box<AgentOutcome>),
}

/// Generates the answer to `request` on `session` and prints it with `printer`; with `tools`
/// (and a chat prompt) the model may call them, round after round.
pub fn answer<B: Backend>(
    session: &mut Session<B>,
    tools: Option<&ToolSetup>,
    request: &GenerateRequest,
    printer: &mut Printer,
) -> Result<Answered> {
    if let (Some(tools), Prompt::Chat(chat)) = (tools, &request.prompt) {
        let mut options = AgentOptions::new(tools.format, request.clone());
        options.max_rounds = tools.max_rounds;
        options.external = tools.external.clone();
        // A failure to print ends the loop (ControlFlow::Break) and is reported afterwards.
        let mut failure: Option<anyhow::Error> = None;
        let outcome =
            run_agent(
                session,
                &tools.registry,
                chat.clone(),
                &options,
                |event| match printer.agent_event(&event) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failure = Some(e);
                        ControlFlow::Break(())
                    }
                },
            )?;
        if let Some(e) = failure {
            return Err(e);
        }
        printer.agent_end(&outcome)?;
        return Ok(Answered::Tools(Box::new(outcome)));
    }
    let mut completion = None;
    for event in session.generate(request)? {
        let event = event?;
        printer.event(&event)?;
        if let Event::Done(c) = event {
            completion = Some(*c);
        }
    }
    let completion = completion.context("generation ended without a result")?;
    printer.end(&completion)?;
    Ok(Answered::Plain(Box::new(completion)))
}
