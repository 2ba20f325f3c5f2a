//! How answers are generated and shown: the flags `run` and `chat` share.

use clap::Args;

use smollm3_flags::SamplingArgs;

/// How answers are generated and shown, shared by `run` and `chat`.
#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// A system message.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Answer without thinking: the prompt gets an empty think block (in chat, /think and
    /// /no_think switch it).
    #[arg(long)]
    pub no_think: bool,
    /// Don't show the reasoning (it is still generated unless --no-think; on a terminal a
    /// "thought for N s" line stands for it).
    #[arg(long)]
    pub hide_thinking: bool,
    /// Most reasoning tokens before `</think>` is forced (0 = no thinking).
    #[arg(long, value_name = "N")]
    pub reasoning_budget: Option<usize>,
    /// Sampling settings and -n/--max-tokens, from the one table in `smollm3_gen`.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when this text is generated (not printed); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Decode one token per step, without prompt-lookup drafts (speculative decoding that
    /// guesses the next tokens from the prompt and the answer so far: the same answer,
    /// sooner when it repeats text; on by default).
    #[arg(long)]
    pub no_prompt_lookup: bool,
}
