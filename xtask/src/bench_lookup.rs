//! `cargo xtask bench-lookup`: prompt-lookup speculative decoding (`smollm3_gen::draft`) on a
//! quoting task and on free text, greedy, with drafts and without, runs interleaved. Reports
//! decode tok/s both ways (the generation loop's own figure, first token excluded), the
//! ratio, and how many drafted tokens the model took. Greedy answers are the same either way
//! (checked here too: the run fails if they differ).
//!
//! `--llama-lookup PATH` also runs llama.cpp's `llama-lookup` (its prompt-lookup decoding) on
//! the same prompts, rendered here by the file's own template and given with `-f`: greedy,
//! the same tokens and threads, drafts of at most 15 (`--spec-draft-n-max 15`) against none
//! (`0`), each pair right after ours, and reports its figures beside ours.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{Engine, GenerateRequest, SamplingParams};
use smollm3_model::LoadOptions;

use crate::bench::Stat;

/// Options of `cargo xtask bench-lookup`.
#[derive(Debug, Clone, clap::Args)]
pub struct LookupBenchArgs {
    /// GGUF to run [default: the synthetic SmolLM3-3B Q4_K_M file in target/bench/; its random
    /// weights never quote, so give a trained model (e.g. SmolLM2-135M-Instruct) to see drafts
    /// taken].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokens generated per run.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Repetitions of each (task, mode).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Also run llama.cpp's `llama-lookup` at this path on the same prompts, the same way.
    #[arg(long, value_name = "PATH")]
    pub llama_lookup: Option<PathBuf>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// llama-lookup's figures for one task (when `--llama-lookup` is given).
#[derive(Debug, Serialize)]
struct LlamaRow {
    plain_tokens_per_second: Stat,
    lookup_tokens_per_second: Stat,
    ratio: Stat,
    drafted: usize,
    accepted: usize,
}

/// A paragraph to quote back, sentence by sentence.
const PARAGRAPH: &str = "The lighthouse keeper climbed the stairs at dusk. He trimmed the wick \
    and polished the great lens until it shone. Ships passed far out at sea, their lights like \
    slow stars. In the morning he wrote the weather in his book and slept until noon. Years went \
    by this way, and he never once let the light go out.";

fn tasks() -> [(&'static str, String); 2] {
    [
        (
            "quoting",
            format!(
                "Repeat the following paragraph exactly, with every sentence numbered:\n\n{PARAGRAPH}"
            ),
        ),
        (
            "free",
            "Write a short story about a robot who learns to paint.".to_string(),
        ),
    ]
}

#[derive(Debug, Serialize)]
struct Row {
    task: &'static str,
    plain_tokens_per_second: Stat,
    lookup_tokens_per_second: Stat,
    /// Median of lookup / plain over the repetitions (each pair run back to back).
    ratio: Stat,
    drafted: usize,
    accepted: usize,
    generated: usize,
    llama: Option<LlamaRow>,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    cpu: String,
    kernel_path: String,
    tokens: usize,
    rows: Vec<Row>,
}

pub fn run(args: LookupBenchArgs, workspace: &Path) -> Result<()> {
    if args.tokens < 2 || args.reps == 0 {
        bail!("--tokens must be at least 2 and --reps at least 1");
    }
    let model = crate::bench::model_or_synthetic(args.model.as_deref(), workspace)?;
    crate::bench::warm_page_cache(&model)?;
    let engine = Engine::load(&model, &LoadOptions::default())
        .with_context(|| format!("loading {}", model.display()))?;
    let mut rows = Vec::new();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let bench_dir = workspace.join("target/bench");
    for (task, prompt) in tasks() {
        let (mut plain, mut lookup, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let (mut drafted, mut accepted, mut generated) = (0, 0, 0);
        let mut llama = Vec::new();
        // The prompt as text, for llama-lookup's `-f`.
        let prompt_file = bench_dir.join(format!("lookup-{task}.txt"));
        if args.llama_lookup.is_some() {
            let mut chat = ChatRequest {
                add_generation_prompt: true,
                enable_thinking: Some(false),
                ..Default::default()
            };
            chat.push(Message::user(prompt.as_str()));
            std::fs::create_dir_all(&bench_dir)?;
            std::fs::write(&prompt_file, engine.template.render(&chat)?)?;
        }
        for rep in 0..args.reps {
            eprintln!("bench-lookup: {task}, run {}/{}", rep + 1, args.reps);
            let mut answers = Vec::new();
            let mut speeds = [0.0; 2];
            for (i, on) in [false, true].into_iter().enumerate() {
                let mut session = engine.session(args.tokens + 512)?;
                let mut chat = ChatRequest {
                    add_generation_prompt: true,
                    enable_thinking: Some(false),
                    ..Default::default()
                };
                chat.push(Message::user(prompt.as_str()));
                let request = GenerateRequest {
                    sampling: SamplingParams {
                        max_tokens: Some(args.tokens),
                        ..SamplingParams::greedy()
                    },
                    prompt_lookup: on,
                    ..GenerateRequest::chat(chat)
                };
                let done = session.generate(&request)?.complete()?;
                speeds[i] = done.stats.decode_tokens_per_second;
                if on {
                    drafted += done.stats.draft_tokens;
                    accepted += done.stats.draft_accepted;
                    generated += done.stats.generated_tokens;
                }
                answers.push(done.answer);
            }
            if answers[0] != answers[1] {
                bail!("{task}: the answer with drafts differs from the one without");
            }
            plain.push(speeds[0]);
            lookup.push(speeds[1]);
            ratio.push(speeds[1] / speeds[0]);
            if let Some(binary) = &args.llama_lookup {
                let off = llama_lookup(binary, &model, &prompt_file, args.tokens, threads, 0)?;
                let on = llama_lookup(binary, &model, &prompt_file, args.tokens, threads, 15)?;
                llama.push((off, on));
            }
        }
        let llama = (!llama.is_empty()).then(|| LlamaRow {
            plain_tokens_per_second: Stat::of(llama.iter().map(|(off, _)| off.speed)),
            lookup_tokens_per_second: Stat::of(llama.iter().map(|(_, on)| on.speed)),
            ratio: Stat::of(llama.iter().map(|(off, on)| on.speed / off.speed)),
            drafted: llama.iter().map(|(_, on)| on.drafted).sum(),
            accepted: llama.iter().map(|(_, on)| on.accepted).sum(),
        });
        rows.push(Row {
            task,
            plain_tokens_per_second: Stat::of(plain),
            lookup_tokens_per_second: Stat::of(lookup),
            ratio: Stat::of(ratio),
            drafted,
            accepted,
            generated,
            llama,
        });
    }
    let report = Report {
        model: model.display().to_string(),
        cpu: crate::bench::cpu_model_name(),
        kernel_path: smollm3_model::kernels::path_name().to_string(),
        tokens: args.tokens,
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "model {}\nCPU {}, kernels {}, greedy, {} tokens a run (medians, [min..max])",
        report.model, report.cpu, report.kernel_path, report.tokens
    );
    println!(
        "{:>8} {:>22} {:>22} {:>22} {:>24}",
        "task", "plain tok/s", "lookup tok/s", "ratio", "drafted / taken / gen"
    );
    for row in &report.rows {
        println!(
            "{:>8} {:>22} {:>22} {:>22} {:>24}",
            row.task,
            row.plain_tokens_per_second.to_string(),
            row.lookup_tokens_per_second.to_string(),
            format!(
                "{:.2}x [{:.2}..{:.2}]",
                row.ratio.median, row.ratio.min, row.ratio.max
            ),
            format!("{} / {} / {}", row.drafted, row.accepted, row.generated),
        );
        if let Some(llama) = &row.llama {
            println!(
                "{:>8} {:>22} {:>22} {:>22} {:>24}",
                "  llama",
                llama.plain_tokens_per_second.to_string(),
                llama.lookup_tokens_per_second.to_string(),
                format!(
                    "{:.2}x [{:.2}..{:.2}]",
                    llama.ratio.median, llama.ratio.min, llama.ratio.max
                ),
                format!("{} / {} / -", llama.drafted, llama.accepted),
            );
        }
    }
    Ok(())
}

/// What one llama-lookup run reported.
struct LlamaRun {
    speed: f64,
    drafted: usize,
    accepted: usize,
}

/// One greedy llama-lookup run of `tokens` tokens on the prompt in `prompt_file`, drafts of
/// at most `draft` tokens (0: none).
fn llama_lookup(
    binary: &Path,
    model: &Path,
    prompt_file: &Path,
    tokens: usize,
    threads: usize,
    draft: usize,
) -> Result<LlamaRun> {
    let output = std::process::Command::new(binary)
        .args(["-m", &model.display().to_string()])
        .args(["-f", &prompt_file.display().to_string()])
        .args(["-n", &tokens.to_string(), "--temp", "0"])
        .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
        .args(["-c", &(tokens + 512).to_string()])
        .args(["--spec-draft-n-max", &draft.to_string()])
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        let last = log.lines().last().unwrap_or_default();
        bail!("{} failed ({}): {last}", binary.display(), output.status);
    }
    // "decoded  70 tokens in 0.403 seconds, speed:  173.509 t/s", "n_drafted    = 75".
    // The word after `key` on the first line with `line` (the prompt's line comes first with
    // a speed of its own).
    let after = |line: &str, key: &str| -> Option<&str> {
        let line = log.lines().find(|l| l.contains(line) && l.contains(key))?;
        line[line.find(key)? + key.len()..]
            .split_whitespace()
            .next()
    };
    let speed = after("decoded", "speed:").and_then(|v| v.parse().ok());
    let count = |key: &str| after(key, key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let Some(speed) = speed else {
        bail!("{}: no decode speed in its output", binary.display());
    };
    Ok(LlamaRun {
        speed,
        drafted: count("n_drafted    ="),
        accepted: count("n_accept     ="),
    })
}
