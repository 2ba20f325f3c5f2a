//! `xtask bench-child` (hidden): one measured run of the engine, in its own process.
//!
//! Reads the model file once (page cache), then times, in order:
//! 1. `Model::load_with`,
//! 2. time to first token: the first forward pass of the process (`--ttft-prompt` tokens, with
//!    whatever one-time costs the first call has) and the argmax of its logits,
//! 3. warm-up: a 2-token forward pass (the first multi-token call may have one-time costs),
//! 4. prefill: one `forward_last` over `--prompt` tokens on an emptied cache, plus argmax,
//! 5. decode: `--gen` greedy steps of `forward_last` over one token each, plus argmax
//!    ("forward only"),
//!
//! then reads its own peak RSS (`VmHWM`) and, unless `--no-gen-loop`:
//!
//! 6. the generation loop: a `smollm3_gen::Session` over the same loaded model generates `--gen`
//!    tokens from the same prompt (its own chunked prefill first) with the default sampling
//!    (temperature 0.6, top-p 0.95, fixed seed) and a stop string, so every per-token cost of
//!    the engine runs: sampling over the whole vocabulary, detokenizing, stop matching, the
//!    output splitter and the event queue. Its backend times each forward pass, which splits
//!    the loop's decode time into forward passes and everything else; then `Sampler::sample`
//!    alone is timed on the first sampled row ([`GenLoopReport`]).
//!
//! Prints one JSON line ([`ChildReport`]).
//! Thread counts come from the environment (`RAYON_NUM_THREADS`, `CANDLE_NUM_THREADS`), set by
//! the parent. Run it directly to profile, e.g. `perf record -g target/release/xtask
//! bench-child --model M.gguf --prompt 1 --gen 128 --no-gen-loop`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use smollm3_chat::{ChatTemplate, Tokenizer};
use smollm3_gen::{
    Backend, Event, GenerateRequest, ModelBackend, Prompt, Sampler, SamplingParams, Session,
};
use smollm3_model::{GgufFile, KvType, LoadOptions, Model, Tensor};

/// The measured workload, shared by `bench` (which passes it on) and `bench-child`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Workload {
    /// Prompt length of the prefill measurement (one forward pass) and of the generation loop.
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Tokens decoded greedily, one forward pass each; then as many by the generation loop.
    #[arg(long, default_value_t = 128)]
    pub gen: usize,
    /// Context size of the KV cache.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// How the KV cache stores keys and values (f16, the engine's default, or f32).
    #[arg(long, default_value_t = KvType::F16)]
    pub kv_cache: KvType,
    /// Prompt length of the time-to-first-token measurement (the first forward pass after load).
    #[arg(long, default_value_t = 1)]
    pub ttft_prompt: usize,
    /// Skip the generation-loop measurement (sampling, detokenizing, stop strings over the
    /// same model), which prefills the prompt a second time.
    #[arg(long)]
    pub no_gen_loop: bool,
}

impl Workload {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.prompt > 0 && self.gen > 0 && self.ttft_prompt > 0,
            "--prompt, --gen and --ttft-prompt must be positive"
        );
        ensure!(
            self.prompt + self.gen <= self.ctx && self.ttft_prompt <= self.ctx,
            "--ctx {} is too small for --prompt {} + --gen {}",
            self.ctx,
            self.prompt,
            self.gen
        );
        ensure!(
            self.no_gen_loop || self.gen >= 2,
            "the generation loop needs --gen 2 or more to time a decode step (or --no-gen-loop)"
        );
        Ok(())
    }

    /// The command-line arguments that reproduce this workload.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--prompt".to_string(),
            self.prompt.to_string(),
            "--gen".to_string(),
            self.gen.to_string(),
            "--ctx".to_string(),
            self.ctx.to_string(),
            "--ttft-prompt".to_string(),
            self.ttft_prompt.to_string(),
            "--kv-cache".to_string(),
            self.kv_cache.to_string(),
        ];
        if self.no_gen_loop {
            args.push("--no-gen-loop".to_string());
        }
        args
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub workload: Workload,
    /// Seed of the random prompt.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Stop string of the generation loop (checked after every token, never expected to match).
const GEN_LOOP_STOP: &str = "\n\nUser:";
/// Sampling seed of the generation loop.
const GEN_LOOP_SEED: u64 = 1;
/// `Sampler::sample` calls timed on the first sampled row.
pub const SAMPLE_TIMING_CALLS: usize = 51;

/// The generation loop's request: `gen` tokens from `prompt` with the default sampling
/// settings (fixed seed) and one stop string.
fn gen_loop_request(prompt: Vec<u32>, gen: usize) -> GenerateRequest {
    GenerateRequest {
        sampling: SamplingParams {
            seed: Some(GEN_LOOP_SEED),
            max_tokens: Some(gen),
            ..SamplingParams::default()
        },
        stop: vec![GEN_LOOP_STOP.to_string()],
        ..GenerateRequest::new(Prompt::Tokens(prompt))
    }
}

/// One line describing the generation loop's settings, for the report (every sampling
/// setting, from the one table in `smollm3_gen`).
pub fn gen_loop_settings(gen: usize) -> String {
    let r = gen_loop_request(Vec::new(), gen);
    let settings: Vec<String> = smollm3_gen::SETTINGS
        .iter()
        .map(|s| format!("{} {}", s.name, s.show(&r.sampling)))
        .collect();
    format!(
        "Session::generate on the prefill's prompt (Prompt::Tokens), {}, stop {:?}, \
         end-of-generation tokens masked",
        settings.join(", "),
        r.stop
    )
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
    /// The forward-only decode: `--gen` steps of `forward_last` + argmax.
    pub decode_s: f64,
    pub decode_tok_s: f64,
    pub decode_step_ms_median: f64,
    pub decode_step_ms_max: f64,
    /// CPU seconds of all threads per wall second during the (steady) prefill and the decode.
    /// candle's pools spin while they wait, so on an idle machine this is close to the thread
    /// count; clearly less means other processes took the cores (a noisy measurement).
    pub prefill_cpu_util: f64,
    pub decode_cpu_util: f64,
    /// `VmHWM` after the forward-only decode (before the generation loop).
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
    /// Our kernels' instruction-set path in this process (`smollm3_model::kernels::path_name`).
    #[serde(default)]
    pub kernel_path: Option<String>,
    /// 1, 5 and 15-minute load averages when the parent started this run.
    #[serde(default)]
    pub loadavg_before: Option<String>,
    /// The generation loop (absent with `--no-gen-loop`).
    #[serde(default)]
    pub gen_loop: Option<GenLoopReport>,
}

/// The whole generation loop (`smollm3_gen::Session::generate`) on the same model and prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenLoopReport {
    /// Tokens generated (`Stats::generated_tokens`); `--gen` unless the stop string matched.
    pub generated_tokens: usize,
    pub finish_reason: String,
    /// The loop's own prefill (`PREFILL_CHUNK`-token chunks), `Stats::prefill_tokens_per_second`.
    pub prefill_tok_s: f64,
    /// From the first generated token to the end (`Stats::decode_ms`), covering
    /// `generated_tokens - 1` steps of forward pass + sampling + detokenizing + stop check.
    pub decode_s: f64,
    /// `Stats::decode_tokens_per_second`: (generated_tokens - 1) / decode_s.
    pub decode_tok_s: f64,
    /// Time inside `Backend::forward` during the decode (`forward_last` plus copying the
    /// logits out of the tensor), and the number of those calls.
    pub decode_forward_s: f64,
    pub decode_forward_calls: usize,
    /// (decode_s - decode_forward_s) / decode steps: the loop's own cost per token.
    pub overhead_us_per_token: f64,
    pub decode_cpu_util: f64,
    /// Bytes of text the loop emitted (answer + reasoning): the detokenizer's output.
    pub text_bytes: usize,
    /// Events the iterator yielded (prefill progress, text deltas, done).
    pub events: usize,
    /// Tokens in the top-p 0.95 nucleus at temperature 0.6 of the first sampled row (the
    /// prefill's logits): how flat the model's distributions are, which sets the sampling cost.
    pub first_row_nucleus: usize,
    /// Median time of one `Sampler::sample` call with the loop's settings on that row (after
    /// the loop, [`SAMPLE_TIMING_CALLS`] calls): the sampling part of the overhead.
    pub first_row_sample_us: f64,
    /// `VmHWM` at the end of the run (tokenizer and the loop's KV cache included; the
    /// forward-only cache is freed before).
    pub vm_hwm_bytes: u64,
}

pub fn run(args: ChildArgs) -> Result<()> {
    let work = &args.workload;
    work.validate()?;
    crate::bench::warm_page_cache(&args.model)?;

    let start = Instant::now();
    let options = LoadOptions {
        kv_type: work.kv_cache,
        ..LoadOptions::default()
    };
    let model = Model::load_with(&args.model, &options)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_s = start.elapsed().as_secs_f64();
    let model = Arc::new(model);
    let rss_after_load_bytes = proc_status_kb("VmRSS").unwrap_or(0) * 1024;

    let vocab = model.config().vocab_size;
    let prompt = random_tokens(work.prompt.max(work.ttft_prompt), vocab, args.seed);
    let mut cache = model.new_cache(work.ctx)?;

    let start = Instant::now();
    let logits = model.forward_last(&prompt[..work.ttft_prompt], &mut cache)?;
    let _first = argmax(&logits)?;
    let ttft_s = start.elapsed().as_secs_f64();
    let rss_after_ttft_bytes = proc_status_kb("VmRSS").unwrap_or(0) * 1024;

    // Warm-up: the first multi-token call of the process pays one-time costs that the 1-token
    // TTFT call did not (candle's QMatMul repacks Q6_K weights for multi-row matmuls on first
    // use); two tokens are enough to trigger them, so the prefill below is the steady state.
    cache.reset();
    let start = Instant::now();
    model.forward_last(&prompt[..2.min(work.prompt)], &mut cache)?;
    let warmup_s = start.elapsed().as_secs_f64();

    cache.reset();
    let cpu = cpu_seconds();
    let start = Instant::now();
    let logits = model.forward_last(&prompt[..work.prompt], &mut cache)?;
    let mut next = argmax(&logits)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let prefill_cpu_util = (cpu_seconds() - cpu) / prefill_s;

    let mut steps = Vec::with_capacity(work.gen);
    let cpu = cpu_seconds();
    let start = Instant::now();
    for _ in 0..work.gen {
        let t = Instant::now();
        let logits = model.forward_last(&[next], &mut cache)?;
        next = argmax(&logits)?;
        steps.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let decode_s = start.elapsed().as_secs_f64();
    let decode_cpu_util = (cpu_seconds() - cpu) / decode_s;
    steps.sort_by(f64::total_cmp);
    let vm_hwm_bytes = proc_status_kb("VmHWM").context("reading VmHWM")? * 1024;
    let kv_cache_bytes = cache.allocated_bytes() as u64;
    drop(cache);

    let gen_loop = if work.no_gen_loop {
        None
    } else {
        Some(run_gen_loop(
            &args.model,
            model,
            &prompt[..work.prompt],
            work,
        )?)
    };

    let report = ChildReport {
        load_s,
        ttft_s,
        warmup_s,
        prefill_s,
        prefill_tok_s: work.prompt as f64 / prefill_s,
        decode_s,
        decode_tok_s: work.gen as f64 / decode_s,
        decode_step_ms_median: steps.get(steps.len() / 2).copied().unwrap_or(f64::NAN),
        decode_step_ms_max: steps.last().copied().unwrap_or(f64::NAN),
        prefill_cpu_util,
        decode_cpu_util,
        vm_hwm_bytes,
        rss_after_load_bytes,
        rss_after_ttft_bytes,
        kv_cache_bytes,
        process_threads: proc_status_kb("Threads").unwrap_or(0),
        rayon_num_threads: std::env::var("RAYON_NUM_THREADS").ok(),
        candle_num_threads: std::env::var("CANDLE_NUM_THREADS").ok(),
        kernel_path: Some(smollm3_model::kernels::path_name().to_string()),
        loadavg_before: None,
        gen_loop,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `Session::generate` over the loaded model: `work.gen` tokens from `prompt`, default
/// sampling with a fixed seed, one stop string. End-of-generation tokens are masked (like
/// llama.cpp's `--ignore-eos`): the random weights of the synthetic model would otherwise end
/// some runs early, at random lengths.
fn run_gen_loop(
    path: &Path,
    model: Arc<Model>,
    prompt: &[u32],
    work: &Workload,
) -> Result<GenLoopReport> {
    let gguf = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let tokenizer =
        Arc::new(Tokenizer::from_gguf_content(gguf.content()).context("building the tokenizer")?);
    let template = Arc::new(
        ChatTemplate::from_gguf_content(gguf.content()).context("reading the chat template")?,
    );
    drop(gguf);
    let backend = TimedBackend {
        inner: ModelBackend::new(model, work.ctx)?,
        masked: tokenizer.eog_ids(),
        prompt_len: prompt.len(),
        fed: 0,
        decode_forward_s: 0.0,
        decode_forward_calls: 0,
        first_row: None,
    };
    let mut session = Session::with_backend(backend, tokenizer, template);
    let request = gen_loop_request(prompt.to_vec(), work.gen);

    let mut events = 0;
    let mut completion = None;
    let mut decode_start = None;
    for event in session.generate(&request)? {
        events += 1;
        match event? {
            Event::PrefillProgress { processed, total } if processed == total => {
                decode_start = Some((cpu_seconds(), Instant::now()));
            }
            Event::Done(done) => completion = Some(*done),
            _ => {}
        }
    }
    let end = Instant::now();
    let cpu_end = cpu_seconds();
    let completion = completion.context("the generation loop ended without its Done event")?;
    let stats = &completion.stats;
    let steps = stats.generated_tokens.saturating_sub(1);
    ensure!(
        steps > 0,
        "the generation loop stopped after {} token(s) ({}): nothing to time",
        stats.generated_tokens,
        completion.finish_reason.as_str()
    );
    let backend = session.backend();
    let vm_hwm_bytes = proc_status_kb("VmHWM").context("reading VmHWM")? * 1024;
    let (first_row_nucleus, first_row_sample_us) = match backend.first_row.as_deref() {
        Some(row) => (
            nucleus_size(row, request.sampling.temperature, request.sampling.top_p),
            time_sampling(row, &request.sampling)?,
        ),
        None => (0, 0.0),
    };
    let decode_s = stats.decode_ms / 1e3;
    let decode_cpu_util = decode_start.map_or(0.0, |(cpu, t)| {
        (cpu_end - cpu) / end.duration_since(t).as_secs_f64()
    });
    Ok(GenLoopReport {
        generated_tokens: stats.generated_tokens,
        finish_reason: completion.finish_reason.as_str().to_string(),
        prefill_tok_s: stats.prefill_tokens_per_second,
        decode_s,
        decode_tok_s: stats.decode_tokens_per_second,
        decode_forward_s: backend.decode_forward_s,
        decode_forward_calls: backend.decode_forward_calls,
        overhead_us_per_token: (decode_s - backend.decode_forward_s) * 1e6 / steps as f64,
        decode_cpu_util,
        text_bytes: completion.answer.len() + completion.reasoning.len(),
        events,
        first_row_nucleus,
        first_row_sample_us,
        vm_hwm_bytes,
    })
}

/// Median µs of one `Sampler::sample` call on a fresh copy of `row` (the copy is not timed).
fn time_sampling(row: &[f32], params: &SamplingParams) -> Result<f64> {
    let mut sampler = Sampler::new(params)?;
    let mut scratch = row.to_vec();
    let mut times = Vec::with_capacity(SAMPLE_TIMING_CALLS);
    for _ in 0..SAMPLE_TIMING_CALLS {
        scratch.copy_from_slice(row);
        let start = Instant::now();
        std::hint::black_box(sampler.sample(&mut scratch)?);
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// The session's [`ModelBackend`], with the time spent in its decode forward passes recorded
/// and the end-of-generation logits masked.
struct TimedBackend {
    inner: ModelBackend,
    /// Token ids whose logits are set to -inf.
    masked: Vec<u32>,
    prompt_len: usize,
    /// Tokens fed so far; calls after the first `prompt_len` tokens are decode steps.
    fed: usize,
    decode_forward_s: f64,
    decode_forward_calls: usize,
    /// The logits of the last prefill call (the first sampled row), masked.
    first_row: Option<Vec<f32>>,
}

impl Backend for TimedBackend {
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
        let start = Instant::now();
        let mut logits = self.inner.forward(tokens)?;
        let elapsed = start.elapsed().as_secs_f64();
        let decoding = self.fed >= self.prompt_len;
        self.fed += tokens.len();
        if decoding {
            self.decode_forward_s += elapsed;
            self.decode_forward_calls += 1;
        }
        for &id in &self.masked {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if !decoding && self.fed >= self.prompt_len {
            // The last prefill call (before the timed decode); analysed after the loop.
            self.first_row = Some(logits.clone());
        }
        Ok(logits)
    }
}

/// Tokens in the smallest set of most likely tokens whose probability (softmax at
/// `temperature`) reaches `top_p`.
fn nucleus_size(logits: &[f32], temperature: f32, top_p: f32) -> usize {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0;
    }
    let mut p: Vec<f64> = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| f64::from((l - max) / temperature).exp())
        .collect();
    let z: f64 = p.iter().sum();
    p.sort_by(|a, b| b.total_cmp(a));
    let target = f64::from(top_p) * z;
    let mut sum = 0.0;
    for (i, w) in p.iter().enumerate() {
        sum += w;
        if sum >= target {
            return i + 1;
        }
    }
    p.len()
}

pub(crate) fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(0)?.to_scalar::<u32>()?)
}

/// `n` pseudo-random token ids below `vocab` (splitmix64), the same for the same seed.
pub(crate) fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
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
    fn nucleus_size_counts_the_top_p_mass() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1.
        let l2 = std::f32::consts::LN_2;
        let logits = [0.0, -l2, -2.0 * l2, -2.0 * l2, f32::NEG_INFINITY];
        assert_eq!(nucleus_size(&logits, 1.0, 0.5), 1);
        assert_eq!(nucleus_size(&logits, 1.0, 0.7), 2);
        assert_eq!(nucleus_size(&logits, 1.0, 0.8), 3);
        assert_eq!(nucleus_size(&logits, 1.0, 1.0), 4);
        assert_eq!(nucleus_size(&[f32::NEG_INFINITY], 1.0, 0.9), 0);
        // Equal logits: a 95% nucleus of 100 tokens holds 95 of them.
        assert_eq!(nucleus_size(&[1.0; 100], 0.6, 0.95), 95);
    }

    #[test]
    fn workload_round_trips_through_its_arguments() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            workload: Workload,
        }
        for work in [
            Workload {
                prompt: 64,
                gen: 16,
                ctx: 512,
                ttft_prompt: 3,
                no_gen_loop: false,
                kv_cache: KvType::F32,
            },
            Workload {
                prompt: 512,
                gen: 128,
                ctx: 4096,
                ttft_prompt: 1,
                no_gen_loop: true,
                kv_cache: KvType::F16,
            },
        ] {
            let args = std::iter::once("cli".to_string()).chain(work.to_args());
            let parsed = <Cli as clap::Parser>::parse_from(args).workload;
            assert_eq!(parsed, work);
            assert!(parsed.validate().is_ok());
        }
        let bad = Workload {
            prompt: 64,
            gen: 1,
            ctx: 512,
            ttft_prompt: 1,
            no_gen_loop: false,
            kv_cache: KvType::F16,
        };
        assert!(bad.validate().is_err());
        assert!(Workload {
            no_gen_loop: true,
            ..bad.clone()
        }
        .validate()
        .is_ok());
        assert!(Workload { ctx: 64, ..bad }.validate().is_err());
    }

    #[test]
    fn reads_own_status() {
        assert!(proc_status_kb("VmHWM").unwrap() > 0);
        assert!(proc_status_kb("Threads").unwrap() >= 1);
    }
}
