//! `smollm3`: inspect and run SmolLM3 GGUF models from the command line.

mod answer;
mod args;
mod commands;
mod render;
mod repl;
mod replay;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{chat, inspect, run, tokenizer, tools};

#[derive(Parser)]
#[command(
    name = "smollm3",
    version,
    about = "Run SmolLM3 models locally from one GGUF file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one question, streaming the reasoning (stderr) and the answer (stdout).
    Run(Box<run::RunArgs>),
    /// Chat in the terminal: streamed answers, history, /commands like `ollama run`.
    Chat(Box<chat::ChatArgs>),
    /// Parse tool calls in model output (stdin) and print them as JSON, one per line.
    ParseToolCalls(tools::ParseToolCallsArgs),
    /// Show a model's architecture, size, quantization, context, NoPE layers, rope and tokenizer.
    Info(inspect::InfoArgs),
    /// Print the top logits at every position of a token sequence, one JSON object per line.
    Logits(inspect::LogitsArgs),
    /// Greedy (argmax) continuation of a token sequence, printed as a JSON array of ids.
    Greedy(inspect::GreedyArgs),
    /// Token ids of a text, with the GGUF's own tokenizer.
    #[command(
        after_help = "Examples:\n  smollm3 tokenize --model M.gguf --text \"Hello world\"\n  smollm3 tokenize --model M.gguf --text \"<|im_start|>user\" --special --json"
    )]
    Tokenize(tokenizer::TokenizeArgs),
    /// Text of comma-separated token ids.
    #[command(after_help = "Example:\n  smollm3 detokenize --model M.gguf --tokens 9906,1917")]
    Detokenize(tokenizer::DetokenizeArgs),
    /// Render a conversation with the GGUF's chat template (or its token ids with --tokens).
    #[command(
        after_help = "Examples:\n  smollm3 template --model M.gguf --messages conv.json\n  smollm3 template --model M.gguf --messages conv.json --no-think --tools tools.json --tokens"
    )]
    Template(tokenizer::TemplateArgs),
}

/// `--version`: the version and the CPU features the quantized kernels use on this machine.
fn version_text() -> String {
    let mut features: Vec<&str> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        for (name, on) in [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if on {
                features.push(name);
            }
        }
    }
    let neon = candle_core::utils::with_neon();
    if neon {
        features.push("neon");
    }
    // candle picks its x86 kernels on AVX2 and FMA together (`k_quants::has_avx2_fma`).
    let kernels = if features.contains(&"avx2") && features.contains(&"fma") {
        "AVX2+FMA quantized kernels"
    } else if neon {
        "NEON quantized kernels"
    } else {
        "portable quantized kernels (no AVX2+FMA)"
    };
    format!(
        "{} ({}, own kernels: {}; cpu features: {}; {} threads)",
        env!("CARGO_PKG_VERSION"),
        kernels,
        smollm3_model::kernels::path_name(),
        if features.is_empty() {
            "none detected".to_string()
        } else {
            features.join(" ")
        },
        candle_core::utils::get_num_threads()
    )
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    smollm3_flags::explain_bus_errors();
    smollm3_model::candle_pool::shorten_idle_spin();
    smollm3_model::allocator::keep_freed_tensor_memory();
    let matches = Cli::command().version(version_text()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `-v`: a failure prints its whole chain and, with RUST_BACKTRACE set, where it came from.
    let verbose = cli.command.verbose();
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(run::EXIT_INTERRUPTED),
        // `smollm3 logits ... | head` closes the pipe early: that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) if verbose => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", smollm3_flags::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Whether `-v/--verbose` was given (only `run` and `chat` have it).
    fn verbose(&self) -> bool {
        match self {
            Command::Run(a) => a.verbose,
            Command::Chat(a) => a.verbose,
            _ => false,
        }
    }
}

enum Outcome {
    Done,
    Interrupted,
}

fn run(cli: Cli) -> Result<Outcome> {
    let done = |r: Result<()>| r.map(|()| Outcome::Done);
    match cli.command {
        Command::ParseToolCalls(a) => {
            if tools::run(&a)? {
                anyhow::bail!("some tool calls are malformed (see the `error` fields)");
            }
            Ok(Outcome::Done)
        }
        Command::Run(a) => Ok(if run::run(&a)? {
            Outcome::Interrupted
        } else {
            Outcome::Done
        }),
        Command::Chat(a) => done(chat::run(&a)),
        Command::Info(a) => done(inspect::info(&a)),
        Command::Logits(a) => done(inspect::logits(&a)),
        Command::Greedy(a) => done(inspect::greedy(&a)),
        Command::Tokenize(a) => done(tokenizer::tokenize(&a)),
        Command::Detokenize(a) => done(tokenizer::detokenize(&a)),
        Command::Template(a) => done(tokenizer::template(&a)),
    }
}
