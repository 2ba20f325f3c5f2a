//! `cargo xtask bench-batch`: batched decoding in the model alone (`Model::forward_batch`),
//! without the server. For each batch size `B`, `B` sequences (each its own random prompt and
//! cache) are prefilled in one batch, then decoded greedily in lockstep, one token each per
//! forward pass. Reports total tok/s (all sequences), per-sequence tok/s, and the step time
//! against one sequence's: what the engine can give the server's scheduler. Repetitions are
//! interleaved over the sizes; medians and ranges.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use smollm3_model::{BatchItem, KvCache, LoadOptions, Model};

use crate::bench::Stat;

/// Options of `cargo xtask bench-batch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchBenchArgs {
    /// GGUF to run [default: the synthetic SmolLM3-3B Q4_K_M file in target/bench/, as
    /// `cargo xtask bench` makes it].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub sizes: Vec<usize>,
    /// Prompt tokens per sequence (prefilled before the timed steps).
    #[arg(long, default_value_t = 32)]
    pub prompt: usize,
    /// Timed decode steps per measurement.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Repetitions of each size.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    size: usize,
    step_ms: Stat,
    total_tokens_per_second: Stat,
    per_sequence_tokens_per_second: Stat,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    cpu: String,
    kernel_path: String,
    prompt: usize,
    steps: usize,
    rows: Vec<Row>,
}

pub fn run(args: BatchBenchArgs, workspace: &Path) -> Result<()> {
    if args.sizes.is_empty() || args.sizes.contains(&0) || args.steps == 0 || args.prompt == 0 {
        bail!("--sizes, --steps and --prompt: give counts of at least 1");
    }
    let model_path = crate::bench::model_or_synthetic(args.model.as_deref(), workspace)?;
    crate::bench::warm_page_cache(&model_path)?;
    let model = Model::load_with(&model_path, &LoadOptions::default())
        .with_context(|| format!("loading {}", model_path.display()))?;
    let vocab = model.config().vocab_size;
    // Step times per size, all repetitions.
    let mut steps: Vec<Vec<f64>> = vec![Vec::new(); args.sizes.len()];
    for rep in 0..args.reps {
        for (i, &size) in args.sizes.iter().enumerate() {
            eprintln!(
                "bench-batch: run {}/{}, {size} sequences",
                rep + 1,
                args.reps
            );
            steps[i].extend(measure(&model, size, &args, vocab, rep as u64)?);
        }
    }
    let rows = args
        .sizes
        .iter()
        .zip(&steps)
        .map(|(&size, times)| Row {
            size,
            step_ms: Stat::of(times.iter().map(|s| s * 1e3)),
            total_tokens_per_second: Stat::of(times.iter().map(|s| size as f64 / s)),
            per_sequence_tokens_per_second: Stat::of(times.iter().map(|s| 1.0 / s)),
        })
        .collect();
    let report = Report {
        model: model_path.display().to_string(),
        cpu: crate::bench::cpu_model_name(),
        kernel_path: smollm3_model::kernels::path_name().to_string(),
        prompt: args.prompt,
        steps: args.steps,
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// One measurement: `size` sequences prefilled in one batch, then `args.steps` lockstep
/// greedy steps; the seconds of each step.
fn measure(
    model: &Model,
    size: usize,
    args: &BatchBenchArgs,
    vocab: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let mut caches: Vec<KvCache> = (0..size)
        .map(|_| model.new_cache(args.prompt + args.steps + 1))
        .collect::<smollm3_model::Result<_>>()?;
    let prompts: Vec<Vec<u32>> = (0..size)
        .map(|s| crate::bench_child::random_tokens(args.prompt, vocab, seed * 1000 + s as u64))
        .collect();
    let mut batch: Vec<BatchItem<'_>> = caches
        .iter_mut()
        .zip(&prompts)
        .map(|(cache, tokens)| BatchItem::new(tokens, cache))
        .collect();
    let mut next = argmaxes(&model.forward_batch(&mut batch)?)?;
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let inputs: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut batch: Vec<BatchItem<'_>> = caches
            .iter_mut()
            .zip(&inputs)
            .map(|(cache, tokens)| BatchItem::new(tokens, cache))
            .collect();
        let start = Instant::now();
        let logits = model.forward_batch(&mut batch)?;
        next = argmaxes(&logits)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(times)
}

fn argmaxes(logits: &[smollm3_model::Tensor]) -> Result<Vec<u32>> {
    logits.iter().map(crate::bench_child::argmax).collect()
}

fn print_table(r: &Report) {
    println!(
        "model {}\nCPU {}, kernels {}, prompt {} tokens a sequence, {} steps (medians, [min..max])",
        r.model, r.cpu, r.kernel_path, r.prompt, r.steps
    );
    println!(
        "{:>9} {:>20} {:>22} {:>26} {:>10}",
        "sequences", "step ms", "total tok/s", "per-sequence tok/s", "vs one"
    );
    let one = r.rows.iter().find(|row| row.size == 1);
    for row in &r.rows {
        let ratio = one.map_or(String::from("-"), |one| {
            format!(
                "{:.2}x",
                row.total_tokens_per_second.median / one.total_tokens_per_second.median
            )
        });
        println!(
            "{:>9} {:>20} {:>22} {:>26} {:>10}",
            row.size,
            row.step_ms.to_string(),
            row.total_tokens_per_second.to_string(),
            row.per_sequence_tokens_per_second.to_string(),
            ratio
        );
    }
}
