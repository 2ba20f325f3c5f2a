//! `cargo xtask bench`: end-to-end speed and memory of the engine on a SmolLM3-3B-shaped GGUF.
//!
//! The parent (this module) makes sure a model file exists (by default the synthetic 3B GGUF,
//! generated once into `target/bench/`), then runs every repetition in a fresh child process
//! (`xtask bench-child`, see [`crate::bench_child`]) so that load time, first-call costs and
//! peak RSS are those of the engine alone, not of the generator or of earlier repetitions.
//! Medians over the repetitions go to stdout (a table, or JSON with `--json`) and always to
//! `target/bench/last.json`. Around the runs: the memory-bandwidth wall of a decode step
//! ([`crate::bench_wall`]), `--busy-core` ([`crate::bench_busy`]) and llama.cpp interleaved
//! with our runs, `--vs-llama-cpp` ([`crate::bench_llama`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::quantized::gguf_file::Content;
use serde::Serialize;
use xtask::fixtures::{self, FixtureSpec};

use crate::bench_busy::{BusyCore, BusyCoreReport};
use crate::bench_child::{ChildReport, GenLoopReport, Workload};
use crate::bench_llama::{self, Comparison, LlamaRun, Tool};
use crate::bench_wall::{self, DecodeBytes, WallReport};

/// File name of the cached synthetic model under `target/bench/`.
pub const SYNTHETIC_FILE_NAME: &str = "smollm3-3b-synthetic-q4_k_m.gguf";

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Compute threads (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS for the engine)
    /// [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub workload: Workload,
    /// Repetitions, each in a fresh process; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// GGUF to measure [default: the synthetic SmolLM3-3B Q4_K_M file in target/bench/,
    /// generated on first use].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Before each run, wait up to this many seconds for the machine to be idle (CPUs at least
    /// 90% idle over 3 s), so that other processes do not share the cores with the measured one.
    /// 0: do not wait.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub wait_idle: u64,
    /// Size of the buffer the memory-bandwidth wall is measured on, before the runs, with the
    /// bench's threads (much larger than the L3 cache). 0: do not measure it.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub wall_mib: usize,
    /// Keep one core busy with a spinning process during every measured run (ours and
    /// llama.cpp's), to see what a contended core costs.
    #[arg(long)]
    pub busy_core: bool,
    /// Also run llama.cpp on the same file, interleaved run by run with ours: PATH is
    /// `crates/smollm3-model/benches/llama_cpp_reference.py` (llama-cpp-python) or a
    /// `llama-bench` binary.
    #[arg(long, value_name = "PATH")]
    pub vs_llama_cpp: Option<PathBuf>,
    /// Python that runs the reference script [default: $SMOLLM3_LLAMA_PYTHON, else python3].
    #[arg(long, value_name = "PYTHON")]
    pub llama_python: Option<String>,
}

/// Medians (and spread) of one quantity over the repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// `median [min..max]` to one decimal, as the bench tables show a figure.
impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} [{:.1}..{:.1}]", self.median, self.min, self.max)
    }
}

/// `--model` when given, else the synthetic 3B file in `target/bench/` (made once).
pub fn model_or_synthetic(model: Option<&Path>, workspace: &Path) -> Result<PathBuf> {
    match model {
        Some(path) => Ok(path.to_path_buf()),
        None => ensure_synthetic_model(&workspace.join("target/bench")),
    }
}

impl Stat {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub load_s: Stat,
    pub ttft_s: Stat,
    pub load_to_first_token_s: Stat,
    /// One forward pass over the prompt, after a 2-token warm-up.
    pub prefill_tok_s: Stat,
    /// The 2-token warm-up: one-time costs of the first multi-token call.
    pub warmup_s: Stat,
    /// Forward-only decode: `forward_last` + argmax per token.
    pub decode_tok_s: Stat,
    pub decode_step_ms: Stat,
    /// CPU seconds per wall second while decoding (about the thread count on an idle machine).
    pub decode_cpu_util: Stat,
    pub peak_rss_mb: Stat,
    /// The generation loop (absent with `--no-gen-loop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_loop: Option<GenLoopSummary>,
}

/// The whole generation loop against the forward-only decode of the same runs.
#[derive(Debug, Clone, Serialize)]
pub struct GenLoopSummary {
    /// `Stats::decode_tokens_per_second` of `Session::generate`.
    pub decode_tok_s: Stat,
    /// Per run: loop time per token minus forward-only time per token, in µs, and as a
    /// percentage of the forward-only time per token.
    pub vs_forward_only_us_per_token: Stat,
    pub vs_forward_only_pct: Stat,
    /// Per run, inside the loop: decode time outside `Backend::forward`, per token (µs), and
    /// as a percentage of the time inside it.
    pub overhead_us_per_token: Stat,
    pub overhead_pct: Stat,
    /// The loop's own prefill, in `PREFILL_CHUNK`-token chunks.
    pub prefill_tok_s: Stat,
    pub decode_cpu_util: Stat,
    pub generated_tokens: Stat,
    pub first_row_nucleus: Stat,
    /// One `Sampler::sample` call on that row (µs, median of its timed calls).
    pub first_row_sample_us: Stat,
    /// `VmHWM` at the end of the run (tokenizer and the loop's cache included).
    pub peak_rss_mb: Stat,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    /// SIMD features relevant to the quantized kernels that the CPU reports.
    pub simd_flags: Vec<String>,
    /// Our kernels' instruction-set path, as the bench child reported it.
    pub kernel_path: String,
    pub loadavg_before: String,
    pub loadavg_after: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: PathBuf,
    pub file_bytes: u64,
    pub synthetic: bool,
    pub threads: usize,
    pub prompt: usize,
    pub gen: usize,
    pub ctx: usize,
    /// `f16` or `f32`.
    pub kv_cache: String,
    pub ttft_prompt: usize,
    pub reps: usize,
    /// Sampling and stop settings of the generation loop (absent with `--no-gen-loop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_loop_settings: Option<String>,
    pub machine: Machine,
    pub median: Summary,
    /// KV cache bytes allocated at the end of a run (it grows by doubling).
    pub kv_cache_bytes: u64,
    /// The peak-RSS target: (file + KV cache) * 1.1, in MB (10^6 bytes).
    pub rss_budget_mb: f64,
    /// The decode against the machine's memory bandwidth.
    pub wall: WallReport,
    /// `--busy-core`: the spinner of every measured run, in order (ours 1, llama.cpp 1,
    /// ours 2, ...); empty without it.
    pub busy_core: bool,
    pub spinners: Vec<BusyCoreReport>,
    /// `--vs-llama-cpp`: llama.cpp on the same file, interleaved with our runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<Comparison>,
    pub runs: Vec<ChildReport>,
}

pub fn run(args: BenchArgs, workspace: &Path) -> Result<()> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    args.workload.validate()?;
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let bench_dir = workspace.join("target").join("bench");
    let (model, synthetic) = match &args.model {
        Some(p) => (p.clone(), false),
        None => (ensure_synthetic_model(&bench_dir)?, true),
    };
    let file_bytes = std::fs::metadata(&model)
        .with_context(|| format!("reading {}", model.display()))?
        .len();
    let tool = match &args.vs_llama_cpp {
        Some(path) => {
            let tool = Tool::new(path, args.llama_python.clone())?;
            tool.check()?;
            Some(tool)
        }
        None => None,
    };
    let work = &args.workload;
    let decode_bytes =
        DecodeBytes::of(&model, work.prompt, work.gen, work.kv_cache.bytes() as u64)?;

    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let loadavg_before = loadavg();
    let bandwidth = if args.wall_mib > 0 {
        prepare_run(&args, None)?;
        eprintln!(
            "bench: measuring the read bandwidth wall ({} MiB, {threads} threads)",
            args.wall_mib
        );
        let b = bench_wall::measure_read_bandwidth(args.wall_mib << 20, threads)?;
        eprintln!("bench:   {:.2} GB/s", b.gb_s);
        Some(b)
    } else {
        None
    };
    let mut runs = Vec::with_capacity(args.reps);
    let mut theirs: Vec<LlamaRun> = Vec::new();
    let mut spinners = Vec::new();
    for rep in 0..args.reps {
        let load = loadavg();
        eprintln!(
            "bench: run {}/{} ({threads} threads, load average {load})",
            rep + 1,
            args.reps
        );
        let busy = prepare_run(&args, Some((&exe, &model)))?;
        let mut report = run_child(&exe, &model, &args, threads)?;
        spinners.extend(stop_busy(busy, format!("ours {}", rep + 1)));
        report.loadavg_before = Some(load);
        eprintln!(
            "bench:   load {:.2} s, ttft {:.3} s, warm-up {:.3} s, prefill {:.1} tok/s, \
             decode {:.2} tok/s, peak RSS {:.0} MB, CPU use prefill {:.2} decode {:.2}",
            report.load_s,
            report.ttft_s,
            report.warmup_s,
            report.prefill_tok_s,
            report.decode_tok_s,
            report.vm_hwm_bytes as f64 / 1e6,
            report.prefill_cpu_util,
            report.decode_cpu_util,
        );
        if let Some(g) = &report.gen_loop {
            eprintln!(
                "bench:   generation loop: {} tokens ({}), decode {:.2} tok/s, {:.0} µs/token \
                 outside the forward passes (sampling one row: {:.0} µs), prefill {:.1} tok/s, \
                 CPU use decode {:.2}",
                g.generated_tokens,
                g.finish_reason,
                g.decode_tok_s,
                g.overhead_us_per_token,
                g.first_row_sample_us,
                g.prefill_tok_s,
                g.decode_cpu_util,
            );
        }
        runs.push(report);
        if let Some(tool) = &tool {
            eprintln!("bench: llama.cpp run {}/{}", rep + 1, args.reps);
            let busy = prepare_run(&args, Some((&exe, &model)))?;
            let r = tool.run(&model, work, threads)?;
            spinners.extend(stop_busy(busy, format!("llama.cpp {}", rep + 1)));
            eprintln!(
                "bench:   llama.cpp: load + TTFT {}, prefill {:.1} tok/s, decode {:.2} tok/s",
                r.load_s
                    .zip(r.ttft_s)
                    .map_or("-".to_string(), |(l, t)| format!("{:.3} s", l + t)),
                r.prefill_tok_s,
                r.decode_tok_s
            );
            theirs.push(r);
        }
    }
    let decode_tok_s: Vec<f64> = runs.iter().map(|r| r.decode_tok_s).collect();
    let wall = WallReport::new(bandwidth, decode_bytes, &decode_tok_s);
    let llama_cpp = tool
        .map(|t| bench_llama::compare(&t, work, &runs, theirs, &wall.decode_bytes, Some(&wall)));
    let kv_cache_bytes = runs.iter().map(|r| r.kv_cache_bytes).max().unwrap_or(0);
    let report = Report {
        model,
        file_bytes,
        synthetic,
        threads,
        prompt: args.workload.prompt,
        gen: args.workload.gen,
        ctx: args.workload.ctx,
        kv_cache: args.workload.kv_cache.to_string(),
        ttft_prompt: args.workload.ttft_prompt,
        reps: args.reps,
        gen_loop_settings: (!args.workload.no_gen_loop)
            .then(|| crate::bench_child::gen_loop_settings(args.workload.gen)),
        machine: Machine {
            cpu: cpu_model_name(),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd_flags: simd_flags(),
            kernel_path: runs
                .first()
                .and_then(|r| r.kernel_path.clone())
                .unwrap_or_else(|| "?".to_string()),
            loadavg_before,
            loadavg_after: loadavg(),
        },
        median: summarize(&runs),
        kv_cache_bytes,
        rss_budget_mb: (file_bytes + kv_cache_bytes) as f64 * 1.1 / 1e6,
        wall,
        busy_core: args.busy_core,
        spinners,
        llama_cpp,
        runs,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::create_dir_all(&bench_dir)?;
    let last = bench_dir.join("last.json");
    std::fs::write(&last, format!("{json}\n"))
        .with_context(|| format!("writing {}", last.display()))?;
    if args.json {
        println!("{json}");
    } else {
        print_table(&report);
        println!("(JSON: {})", last.display());
    }
    Ok(())
}

/// Before a measured run (or the wall, `run` None): waits for idle CPUs if asked, warms the
/// page cache with the model, and starts the `--busy-core` spinner (after the idle wait, which
/// it would defeat). The spinner stops when the returned guard drops, also on error.
fn prepare_run(args: &BenchArgs, run: Option<(&Path, &Path)>) -> Result<Option<BusyCore>> {
    if args.wait_idle > 0 {
        let (idle, waited) = wait_for_idle(args.wait_idle)?;
        eprintln!(
            "bench:   CPUs {:.0}% idle after waiting {waited:.0} s",
            idle * 100.0
        );
    }
    let Some((exe, model)) = run else {
        return Ok(None);
    };
    let warm = warm_page_cache(model)?;
    eprintln!("bench:   page cache warm read {warm:.2} s");
    if !args.busy_core {
        return Ok(None);
    }
    let busy = BusyCore::start(exe)?;
    eprintln!("bench:   one core kept busy by pid {}", busy.report().pid);
    Ok(Some(busy))
}

/// Stops the spinner (if any) and returns what it did.
fn stop_busy(busy: Option<BusyCore>, during: String) -> Option<BusyCoreReport> {
    busy.map(|b| BusyCoreReport {
        during,
        ..b.report()
    })
}

/// Idle and total jiffies of all CPUs (`/proc/stat`, first line).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    ensure!(fields.len() >= 5, "unexpected /proc/stat");
    // user nice system idle iowait irq softirq steal ...
    Ok((fields[3] + fields[4], fields.iter().take(8).sum()))
}

/// Waits until the CPUs were at least 90% idle over a 3-second window, or `limit_s` passed.
/// Returns the last idle fraction and the seconds waited.
fn wait_for_idle(limit_s: u64) -> Result<(f64, f64)> {
    let start = Instant::now();
    loop {
        let (i0, t0) = cpu_jiffies()?;
        std::thread::sleep(std::time::Duration::from_secs(3));
        let (i1, t1) = cpu_jiffies()?;
        let idle = (i1 - i0) as f64 / (t1 - t0).max(1) as f64;
        let waited = start.elapsed().as_secs_f64();
        if idle >= 0.9 || waited >= limit_s as f64 {
            return Ok((idle, waited));
        }
    }
}

fn summarize(runs: &[ChildReport]) -> Summary {
    let stat = |f: fn(&ChildReport) -> f64| Stat::of(runs.iter().map(f));
    Summary {
        load_s: stat(|r| r.load_s),
        ttft_s: stat(|r| r.ttft_s),
        load_to_first_token_s: stat(|r| r.load_s + r.ttft_s),
        prefill_tok_s: stat(|r| r.prefill_tok_s),
        warmup_s: stat(|r| r.warmup_s),
        decode_tok_s: stat(|r| r.decode_tok_s),
        decode_step_ms: stat(|r| r.decode_step_ms_median),
        decode_cpu_util: stat(|r| r.decode_cpu_util),
        peak_rss_mb: stat(|r| r.vm_hwm_bytes as f64 / 1e6),
        gen_loop: summarize_gen_loop(runs),
    }
}

/// `None` unless every run has a generation-loop measurement.
fn summarize_gen_loop(runs: &[ChildReport]) -> Option<GenLoopSummary> {
    let pairs: Vec<_> = runs
        .iter()
        .map(|r| r.gen_loop.as_ref().map(|g| (r, g)))
        .collect::<Option<_>>()?;
    if pairs.is_empty() {
        return None;
    }
    let stat = |f: &dyn Fn(&ChildReport, &GenLoopReport) -> f64| {
        Stat::of(pairs.iter().map(|(r, g)| f(r, g)))
    };
    // Time per token, µs.
    let forward_only = |r: &ChildReport| 1e6 / r.decode_tok_s;
    let in_loop = |g: &GenLoopReport| 1e6 / g.decode_tok_s;
    let loop_forward =
        |g: &GenLoopReport| g.decode_forward_s * 1e6 / g.decode_forward_calls.max(1) as f64;
    Some(GenLoopSummary {
        decode_tok_s: stat(&|_, g| g.decode_tok_s),
        vs_forward_only_us_per_token: stat(&|r, g| in_loop(g) - forward_only(r)),
        vs_forward_only_pct: stat(&|r, g| (in_loop(g) / forward_only(r) - 1.0) * 100.0),
        overhead_us_per_token: stat(&|_, g| g.overhead_us_per_token),
        overhead_pct: stat(&|_, g| g.overhead_us_per_token / loop_forward(g) * 100.0),
        prefill_tok_s: stat(&|_, g| g.prefill_tok_s),
        decode_cpu_util: stat(&|_, g| g.decode_cpu_util),
        generated_tokens: stat(&|_, g| g.generated_tokens as f64),
        first_row_nucleus: stat(&|_, g| g.first_row_nucleus as f64),
        first_row_sample_us: stat(&|_, g| g.first_row_sample_us),
        peak_rss_mb: stat(&|_, g| g.vm_hwm_bytes as f64 / 1e6),
    })
}

fn print_table(r: &Report) {
    let m = &r.machine;
    println!(
        "model   {} ({:.2} GB{})",
        r.model.display(),
        r.file_bytes as f64 / 1e9,
        if r.synthetic { ", synthetic" } else { "" }
    );
    println!(
        "machine {} | {} logical CPUs | {} | kernels {} | load avg {} -> {}",
        m.cpu,
        m.logical_cpus,
        m.simd_flags.join(" "),
        m.kernel_path,
        m.loadavg_before,
        m.loadavg_after
    );
    println!(
        "run     {} threads, prompt {}, gen {}, ctx {}, {} KV cache, ttft prompt {}, {} reps \
         (fresh process each)",
        r.threads, r.prompt, r.gen, r.ctx, r.kv_cache, r.ttft_prompt, r.reps
    );
    if let Some(settings) = &r.gen_loop_settings {
        println!("loop    {settings}");
    }
    if r.busy_core {
        let cpu: Vec<String> = r
            .spinners
            .iter()
            .map(|s| match s.cpu_s {
                Some(c) => format!("{}: {c:.1} of {:.1} s", s.during, s.wall_s),
                None => format!("{}: ? of {:.1} s", s.during, s.wall_s),
            })
            .collect();
        println!(
            "busy    CONTENDED: one core kept busy by a spinning process during every run \
             (--busy-core; its CPU time per run: {})",
            cpu.join(", ")
        );
    }
    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "metric", "median", "min", "max"
    );
    let s = &r.median;
    let row = |name: &str, st: &Stat, prec: usize| {
        println!(
            "{name:<44} {:>10.prec$} {:>10.prec$} {:>10.prec$}",
            st.median, st.min, st.max
        );
    };
    row("load (s)", &s.load_s, 3);
    row(
        &format!("TTFT, {}-token prompt (s)", r.ttft_prompt),
        &s.ttft_s,
        3,
    );
    row("load + TTFT (s)", &s.load_to_first_token_s, 3);
    row(
        &format!("prefill @{} (tok/s)", r.prompt),
        &s.prefill_tok_s,
        1,
    );
    row("first 2-token call (s)", &s.warmup_s, 3);
    row(
        &format!("decode @{}, forward only (tok/s)", r.gen),
        &s.decode_tok_s,
        2,
    );
    row("decode step, median (ms)", &s.decode_step_ms, 1);
    row("decode CPU use (cores)", &s.decode_cpu_util, 2);
    row("peak RSS (MB)", &s.peak_rss_mb, 0);
    if let Some(g) = &s.gen_loop {
        row(
            &format!("decode @{}, generation loop (tok/s)", r.gen),
            &g.decode_tok_s,
            2,
        );
        row(
            "loop - forward only, per token (µs)",
            &g.vs_forward_only_us_per_token,
            0,
        );
        row(
            "loop - forward only (% of forward only)",
            &g.vs_forward_only_pct,
            1,
        );
        row(
            "in loop, outside forward, per token (µs)",
            &g.overhead_us_per_token,
            0,
        );
        row(
            "in loop, outside forward (% of forward)",
            &g.overhead_pct,
            2,
        );
        row("generation loop: tokens generated", &g.generated_tokens, 0);
        row(
            "generation loop: first-row top-p nucleus",
            &g.first_row_nucleus,
            0,
        );
        row(
            "generation loop: sampling first row (µs)",
            &g.first_row_sample_us,
            0,
        );
        row(
            &format!("generation loop: prefill @{} (tok/s)", r.prompt),
            &g.prefill_tok_s,
            1,
        );
        row(
            "generation loop: decode CPU use (cores)",
            &g.decode_cpu_util,
            2,
        );
        row("generation loop: peak RSS (MB)", &g.peak_rss_mb, 0);
        if g.generated_tokens.min < r.gen as f64 {
            println!(
                "warning: the generation loop stopped before {} tokens in some runs (the stop \
                 string matched); its tok/s are over the tokens generated",
                r.gen
            );
        }
    }
    let busy = |util: f64| util < 0.8 * r.threads as f64;
    let noisy = r
        .runs
        .iter()
        .filter(|run| {
            busy(run.decode_cpu_util)
                || run
                    .gen_loop
                    .as_ref()
                    .is_some_and(|g| busy(g.decode_cpu_util))
        })
        .count();
    if noisy > 0 {
        println!(
            "warning: in {noisy} of {} runs the decode got less than 80% of {} cores: other \
             processes shared the CPUs (see --wait-idle)",
            r.runs.len(),
            r.threads
        );
    }
    println!(
        "{:<44} {:>10.0}   (file {:.0} MB + KV cache {:.0} MB, +10%)",
        "peak RSS budget (MB)",
        r.rss_budget_mb,
        r.file_bytes as f64 / 1e6,
        r.kv_cache_bytes as f64 / 1e6
    );
    println!();
    r.wall.print(s.decode_tok_s.median);
    if let Some(c) = &r.llama_cpp {
        bench_llama::print(c, s, r.prompt, r.gen);
    }
}

/// Runs one repetition in a child process and parses its JSON report (its last stdout line).
fn run_child(exe: &Path, model: &Path, args: &BenchArgs, threads: usize) -> Result<ChildReport> {
    let n = threads.to_string();
    let output = Command::new(exe)
        .arg("bench-child")
        .arg("--model")
        .arg(model)
        .args(args.workload.to_args())
        // candle 0.11.1: its rayon pool and rayon's global pool size themselves from
        // RAYON_NUM_THREADS; the spin-barrier pool of the quantized matmuls from
        // CANDLE_NUM_THREADS (falling back to RAYON_NUM_THREADS, then physical cores).
        .env("RAYON_NUM_THREADS", &n)
        .env("CANDLE_NUM_THREADS", &n)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} bench-child", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("bench-child failed ({}):\n{stdout}", output.status);
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("bench-child printed no JSON report:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing bench-child report {line:?}"))
}

/// Reads the whole file once so that the timed load reads from the page cache.
pub fn warm_page_cache(path: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(start.elapsed().as_secs_f64())
}

/// The synthetic SmolLM3-3B spec, under the bench cache's file name.
pub fn synthetic_spec() -> FixtureSpec {
    FixtureSpec {
        file_name: SYNTHETIC_FILE_NAME.to_string(),
        ..fixtures::smollm3_3b_spec()
    }
}

/// Returns the cached synthetic 3B GGUF, generating it (atomically) if it is missing or does
/// not match the generator's tensor plan.
pub fn ensure_synthetic_model(dir: &Path) -> Result<PathBuf> {
    let spec = synthetic_spec();
    let path = dir.join(&spec.file_name);
    if path.exists() {
        match check_complete(&path, &spec) {
            Ok(()) => {
                eprintln!("bench: reusing {}", path.display());
                return Ok(path);
            }
            Err(e) => eprintln!("bench: regenerating {}: {e:#}", path.display()),
        }
    }
    eprintln!(
        "bench: generating {} (~1.9 GB, random weights, real SmolLM3-3B shapes; once)",
        path.display()
    );
    let start = Instant::now();
    let written = fixtures::generate(&spec, dir)?;
    check_complete(&written, &spec).context("the freshly generated file fails its check")?;
    eprintln!("bench: generated in {:.0?}", start.elapsed());
    Ok(written)
}

/// A file is reusable when its header lists exactly the tensors of the spec's plan (names,
/// shapes, types) and the file holds every tensor's bytes. The weights themselves do not
/// matter for speed. Generation writes to a temporary file and renames it, so a file that
/// exists was written completely; this also catches a file from an older generator.
fn check_complete(path: &Path, spec: &FixtureSpec) -> Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let content = Content::read(&mut f).context("parsing the GGUF header")?;
    let plan = fixtures::tensor_plan(spec);
    ensure!(
        content.tensor_infos.len() == plan.len(),
        "{} tensors, the plan has {}",
        content.tensor_infos.len(),
        plan.len()
    );
    let mut end = 0u64;
    for t in &plan {
        let info = content
            .tensor_infos
            .get(&t.name)
            .with_context(|| format!("tensor {} missing", t.name))?;
        ensure!(
            info.shape.dims() == t.shape.as_slice() && info.ggml_dtype == t.dtype,
            "tensor {}: {:?} {:?}, the plan has {:?} {:?}",
            t.name,
            info.shape.dims(),
            info.ggml_dtype,
            t.shape,
            t.dtype
        );
        let bytes = (info.shape.elem_count() / t.dtype.block_size() * t.dtype.type_size()) as u64;
        end = end.max(content.tensor_data_offset + info.offset + bytes);
    }
    ensure!(end <= len, "file has {len} bytes, tensors need {end}");
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpuinfo_field(field: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().to_string())
    })
}

pub fn cpu_model_name() -> String {
    cpuinfo_field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn simd_flags() -> Vec<String> {
    const INTERESTING: &[&str] = &[
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx_vnni",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
        "asimddp",
        "i8mm",
    ];
    let flags = cpuinfo_field("flags")
        .or_else(|| cpuinfo_field("Features"))
        .unwrap_or_default();
    let present: Vec<&str> = flags.split_whitespace().collect();
    INTERESTING
        .iter()
        .filter(|f| present.contains(f))
        .map(|f| f.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Stat::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of([4.0, 1.0, 3.0, 2.0]).median, 2.5);
        assert!(Stat::of([]).median.is_nan());
    }

    #[test]
    fn a_truncated_file_is_not_reused() {
        let spec = FixtureSpec::tiny(
            "bench-check.gguf",
            fixtures::QuantScheme::Q4KM,
            fixtures::smollm3_3b_spec().seed,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = fixtures::generate(&spec, dir.path()).unwrap();
        check_complete(&path, &spec).unwrap();
        // Another plan (other layer count) is rejected.
        let other = FixtureSpec {
            layers: spec.layers + 1,
            ..spec.clone()
        };
        assert!(check_complete(&path, &other).is_err());
        // A file cut short is rejected.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 100).unwrap();
        assert!(check_complete(&path, &spec).is_err());
    }
}
