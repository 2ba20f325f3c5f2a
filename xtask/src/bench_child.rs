//! `xtask bench-child` (hidden): one measured run of the engine, in its own process.
//!
//! Reads the model file once (page cache), then times, in order:
//! 1. `Model::load_with`,
//! 2. time to first token: the first forward pass of the process (`--ttft-prompt` tokens, with
//!    whatever one-time costs the first call has) and the argmax of its logits,
//! 3. warm-up: a 2-token forward pass (the first multi-token call may have one-time costs),
//! 4. prefill: one `forward_last` over `--prompt` tokens on an emptied cache, plus argmax,
//! 5. decode: `--gen` greedy steps of `forward_last` over one token each, plus argmax,
//!
//! and finally reads its own peak RSS (`VmHWM`). Prints one JSON line ([`ChildReport`]).
//! Thread counts come from the environment (`RAYON_NUM_THREADS`, `CANDLE_NUM_THREADS`), set by
//! the parent. Run it directly to profile, e.g. `perf record -g target/release/xtask
//! bench-child --model M.gguf --prompt 1 --gen 128`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use smollm3_model::{LoadOptions, Model, Tensor};

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    #[arg(long, default_value_t = 128)]
    pub gen: usize,
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    #[arg(long, default_value_t = 1)]
    pub ttft_prompt: usize,
    /// Seed of the random prompt.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What one child run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    pub load_s: f64,
    pub ttft_s: f64,
    /// The first 2-token forward pass (after the TTFT one): one-time multi-row costs.
    pub warmup_s: f64,
    /// One forward pass over the prompt, after the warm-up.
    pub prefill_s: f64,
    pub prefill_tok_s: f64,
    pub decode_s: f64,
    pub decode_tok_s: f64,
    pub decode_step_ms_median: f64,
    pub decode_step_ms_max: f64,
    /// CPU seconds of all threads per wall second during the (steady) prefill and the decode.
    /// candle's pools spin while they wait, so on an idle machine this is close to the thread
    /// count; clearly less means other processes took the cores (a noisy measurement).
    pub prefill_cpu_util: f64,
    pub decode_cpu_util: f64,
    /// `VmHWM` at the end of the run.
    pub vm_hwm_bytes: u64,
    /// `VmRSS` right after load, before the first forward pass.
    pub rss_after_load_bytes: u64,
    /// `VmRSS` right after the first forward pass.
    pub rss_after_ttft_bytes: u64,
    pub kv_cache_bytes: u64,
    /// Threads of the process at the end (main + compute pools).
    pub process_threads: u64,
    pub rayon_num_threads: Option<String>,
    pub candle_num_threads: Option<String>,
    /// 1, 5 and 15-minute load averages when the parent started this run.
    #[serde(default)]
    pub loadavg_before: Option<String>,
}

pub fn run(args: ChildArgs) -> Result<()> {
    ensure!(
        args.prompt > 0 && args.gen > 0 && args.ttft_prompt > 0,
        "--prompt, --gen and --ttft-prompt must be positive"
    );
    ensure!(
        args.prompt + args.gen <= args.ctx && args.ttft_prompt <= args.ctx,
        "--ctx {} is too small for --prompt {} + --gen {}",
        args.ctx,
        args.prompt,
        args.gen
    );
    crate::bench::warm_page_cache(&args.model)?;

    let start = Instant::now();
    let model = Model::load_with(&args.model, &LoadOptions::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_s = start.elapsed().as_secs_f64();
    let rss_after_load_bytes = proc_status_kb("VmRSS").unwrap_or(0) * 1024;

    let vocab = model.config().vocab_size;
    let prompt = random_tokens(args.prompt.max(args.ttft_prompt), vocab, args.seed);
    let mut cache = model.new_cache(args.ctx)?;

    let start = Instant::now();
    let logits = model.forward_last(&prompt[..args.ttft_prompt], &mut cache)?;
    let _first = argmax(&logits)?;
    let ttft_s = start.elapsed().as_secs_f64();
    let rss_after_ttft_bytes = proc_status_kb("VmRSS").unwrap_or(0) * 1024;

    // Warm-up: the first multi-token call of the process pays one-time costs that the 1-token
    // TTFT call did not (candle's QMatMul repacks Q6_K weights for multi-row matmuls on first
    // use); two tokens are enough to trigger them, so the prefill below is the steady state.
    cache.reset();
    let start = Instant::now();
    model.forward_last(&prompt[..2.min(args.prompt)], &mut cache)?;
    let warmup_s = start.elapsed().as_secs_f64();

    cache.reset();
    let cpu = cpu_seconds();
    let start = Instant::now();
    let logits = model.forward_last(&prompt[..args.prompt], &mut cache)?;
    let mut next = argmax(&logits)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let prefill_cpu_util = (cpu_seconds() - cpu) / prefill_s;

    let mut steps = Vec::with_capacity(args.gen);
    let cpu = cpu_seconds();
    let start = Instant::now();
    for _ in 0..args.gen {
        let t = Instant::now();
        let logits = model.forward_last(&[next], &mut cache)?;
        next = argmax(&logits)?;
        steps.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let decode_s = start.elapsed().as_secs_f64();
    let decode_cpu_util = (cpu_seconds() - cpu) / decode_s;
    steps.sort_by(f64::total_cmp);

    let report = ChildReport {
        load_s,
        ttft_s,
        warmup_s,
        prefill_s,
        prefill_tok_s: args.prompt as f64 / prefill_s,
        decode_s,
        decode_tok_s: args.gen as f64 / decode_s,
        decode_step_ms_median: steps[steps.len() / 2],
        decode_step_ms_max: steps[steps.len() - 1],
        prefill_cpu_util,
        decode_cpu_util,
        vm_hwm_bytes: proc_status_kb("VmHWM").context("reading VmHWM")? * 1024,
        rss_after_load_bytes,
        rss_after_ttft_bytes,
        kv_cache_bytes: cache.allocated_bytes() as u64,
        process_threads: proc_status_kb("Threads").unwrap_or(0),
        rayon_num_threads: std::env::var("RAYON_NUM_THREADS").ok(),
        candle_num_threads: std::env::var("CANDLE_NUM_THREADS").ok(),
        loadavg_before: None,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(0)?.to_scalar::<u32>()?)
}

/// `n` pseudo-random token ids below `vocab` (splitmix64), the same for the same seed.
fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed ^ 0x5DEE_CE66_D1CE_5EED;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % vocab as u64) as u32
        })
        .collect()
}

/// CPU time consumed so far by all live threads of this process (`/proc/self/task/*/schedstat`,
/// nanoseconds on the CPU).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// A numeric field of `/proc/self/status` (`VmHWM`, `VmRSS` in kB; `Threads` as a count).
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_in_range_and_deterministic() {
        let a = random_tokens(512, 1000, 0);
        assert_eq!(a, random_tokens(512, 1000, 0));
        assert_ne!(a, random_tokens(512, 1000, 1));
        assert!(a.iter().all(|&t| t < 1000));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 300);
    }

    #[test]
    fn reads_own_status() {
        assert!(proc_status_kb("VmHWM").unwrap() > 0);
        assert!(proc_status_kb("Threads").unwrap() >= 1);
    }
}
