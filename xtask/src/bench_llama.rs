//! `cargo xtask bench --vs-llama-cpp PATH`: llama.cpp on the same file, interleaved with our
//! runs (ours 1, theirs 1, ours 2, ...), so that both sides see the same machine state, with
//! the same threads, prompt length and generated tokens.
//!
//! PATH is either the llama-cpp-python reference script
//! (`crates/smollm3-model/benches/llama_cpp_reference.py`, run once per repetition with
//! `--reps 1`; it measures what our bench child measures, in a fresh process) or a
//! `llama-bench` binary (`-o json -r 1`: prefill and decode only, decode on an empty cache).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bench::Stat;
use crate::bench_child::{ChildReport, Workload};
use crate::bench_wall::{mean_positions, DecodeBytes, WallReport};

/// Environment variable naming the python that runs the reference script.
pub const PYTHON_ENV: &str = "SMOLLM3_LLAMA_PYTHON";
/// llama.cpp's default KV cache element: f16.
const LLAMA_KV_ELEM_BYTES: u64 = 2;

/// How llama.cpp is run.
#[derive(Debug, Clone)]
pub enum Tool {
    Script { python: String, script: PathBuf },
    LlamaBench { exe: PathBuf },
}

/// One llama.cpp run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlamaRun {
    /// Load and time to first token (the reference script only).
    pub load_s: Option<f64>,
    pub ttft_s: Option<f64>,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub decode_step_ms_median: Option<f64>,
    pub vm_hwm_bytes: Option<u64>,
    /// llama-cpp-python's version, or llama-bench's build commit and number.
    pub version: String,
}

/// A run's JSON from the reference script (`--reps 1`: one entry in `runs`).
#[derive(Deserialize)]
struct ScriptOutput {
    runs: Vec<ScriptRun>,
}

#[derive(Deserialize)]
struct ScriptRun {
    load_s: f64,
    ttft_s: f64,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    decode_step_ms_median: f64,
    vm_hwm_bytes: u64,
    llama_cpp_python: String,
}

/// One test of `llama-bench -o json` (the fields we use).
#[derive(Deserialize)]
struct BenchTest {
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
    #[serde(default)]
    build_commit: Option<String>,
    #[serde(default)]
    build_number: Option<i64>,
}

impl Tool {
    /// A `.py` PATH is the reference script, run by `python` (else `$SMOLLM3_LLAMA_PYTHON`,
    /// else `python3`); anything else is a `llama-bench` binary.
    pub fn new(path: &Path, python: Option<String>) -> Result<Self> {
        ensure!(
            path.is_file(),
            "--vs-llama-cpp {}: no such file",
            path.display()
        );
        if path.extension().is_some_and(|e| e == "py") {
            let python = python
                .or_else(|| std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()))
                .unwrap_or_else(|| "python3".to_string());
            Ok(Self::Script {
                python,
                script: path.to_path_buf(),
            })
        } else {
            Ok(Self::LlamaBench {
                exe: path.to_path_buf(),
            })
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Script { python, script } => format!("{} run by {python}", script.display()),
            Self::LlamaBench { exe } => format!("llama-bench {}", exe.display()),
        }
    }

    /// Fails early, with one line, when the tool cannot run at all.
    pub fn check(&self) -> Result<()> {
        let (mut cmd, what) = match self {
            Self::Script { python, .. } => {
                let mut c = Command::new(python);
                c.args(["-c", "import llama_cpp"]);
                (
                    c,
                    format!("{python} cannot import llama_cpp (see --llama-python)"),
                )
            }
            Self::LlamaBench { exe } => {
                let mut c = Command::new(exe);
                c.arg("--help");
                (c, format!("{} --help failed", exe.display()))
            }
        };
        let out = output(&mut cmd).with_context(|| format!("--vs-llama-cpp: {what}"))?;
        if !out.status.success() {
            bail!("--vs-llama-cpp: {what}: {}", last_line(&out));
        }
        Ok(())
    }

    /// One run of `work` on `model` with `threads` threads.
    pub fn run(&self, model: &Path, work: &Workload, threads: usize) -> Result<LlamaRun> {
        let mut cmd = match self {
            Self::Script { python, script } => {
                let mut c = Command::new(python);
                c.arg(script).arg(model).args([
                    "--threads".to_string(),
                    threads.to_string(),
                    "--prompt".to_string(),
                    work.prompt.to_string(),
                    "--gen".to_string(),
                    work.gen.to_string(),
                    "--ctx".to_string(),
                    work.ctx.to_string(),
                    "--ttft-prompt".to_string(),
                    work.ttft_prompt.to_string(),
                    "--reps".to_string(),
                    "1".to_string(),
                ]);
                c
            }
            Self::LlamaBench { exe } => {
                let mut c = Command::new(exe);
                c.arg("-m").arg(model).args([
                    "-p".to_string(),
                    work.prompt.to_string(),
                    "-n".to_string(),
                    work.gen.to_string(),
                    "-t".to_string(),
                    threads.to_string(),
                    "-r".to_string(),
                    "1".to_string(),
                    "-o".to_string(),
                    "json".to_string(),
                ]);
                c
            }
        };
        let out = output(&mut cmd).with_context(|| format!("running {}", self.describe()))?;
        if !out.status.success() {
            bail!(
                "llama.cpp run failed ({}, {}): {}",
                self.describe(),
                out.status,
                last_line(&out)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        match self {
            Self::Script { .. } => parse_script(&stdout),
            Self::LlamaBench { .. } => parse_llama_bench(&stdout, work.prompt, work.gen),
        }
        .with_context(|| format!("reading the output of {}", self.describe()))
    }

    /// Mean cached positions of llama.cpp's timed decode steps: the script decodes after the
    /// prompt like we do; llama-bench's `tg` test starts on an empty cache.
    fn decode_positions(&self, work: &Workload) -> f64 {
        match self {
            Self::Script { .. } => mean_positions(work.prompt, work.gen),
            Self::LlamaBench { .. } => mean_positions(0, work.gen),
        }
    }
}

fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).output()
}

/// The last non-empty line of stderr (a Python traceback's exception), else of stdout.
fn last_line(out: &Output) -> String {
    [&out.stderr, &out.stdout]
        .iter()
        .find_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "no output".to_string())
}

fn parse_script(stdout: &str) -> Result<LlamaRun> {
    let out: ScriptOutput =
        serde_json::from_str(stdout.trim()).context("expected the script's JSON summary")?;
    let [run] = <[ScriptRun; 1]>::try_from(out.runs)
        .map_err(|runs| anyhow::anyhow!("expected one run, found {}", runs.len()))?;
    Ok(LlamaRun {
        load_s: Some(run.load_s),
        ttft_s: Some(run.ttft_s),
        prefill_tok_s: run.prefill_tok_s,
        decode_tok_s: run.decode_tok_s,
        decode_step_ms_median: Some(run.decode_step_ms_median),
        vm_hwm_bytes: Some(run.vm_hwm_bytes),
        version: format!("llama-cpp-python {}", run.llama_cpp_python),
    })
}

fn parse_llama_bench(stdout: &str, prompt: usize, gen: usize) -> Result<LlamaRun> {
    let tests: Vec<BenchTest> =
        serde_json::from_str(stdout.trim()).context("expected llama-bench's JSON array")?;
    let find = |p: usize, g: usize, what: &str| {
        tests
            .iter()
            .find(|t| t.n_prompt == p && t.n_gen == g)
            .with_context(|| format!("no {what} test (n_prompt {p}, n_gen {g}) in the output"))
    };
    let pp = find(prompt, 0, "prompt")?;
    let tg = find(0, gen, "generation")?;
    Ok(LlamaRun {
        load_s: None,
        ttft_s: None,
        prefill_tok_s: pp.avg_ts,
        decode_tok_s: tg.avg_ts,
        decode_step_ms_median: None,
        vm_hwm_bytes: None,
        version: format!(
            "llama-bench {} (build {})",
            pp.build_commit.as_deref().unwrap_or("?"),
            pp.build_number.map_or("?".to_string(), |n| n.to_string())
        ),
    })
}

/// llama.cpp beside our runs, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub tool: String,
    pub version: String,
    /// How its protocol differs from ours, if it does.
    pub note: Option<String>,
    pub load_to_first_token_s: Option<Stat>,
    pub prefill_tok_s: Stat,
    pub decode_tok_s: Stat,
    pub decode_step_ms: Option<Stat>,
    pub peak_rss_mb: Option<Stat>,
    /// Per pair of interleaved runs, our speed divided by llama.cpp's (> 1: ours faster); for
    /// load + TTFT that is llama.cpp's time divided by ours.
    pub speedup_prefill: Stat,
    pub speedup_decode: Stat,
    pub speedup_load_to_first_token: Option<Stat>,
    /// Its decode against the wall: the same weight bytes, its f16 KV cache.
    pub decode_gb_s: Stat,
    pub decode_pct_of_wall: Option<Stat>,
    pub runs: Vec<LlamaRun>,
}

/// Every run of `theirs` has a value: its stat, else `None`.
fn all_of(theirs: &[LlamaRun], f: impl Fn(&LlamaRun) -> Option<f64>) -> Option<Stat> {
    theirs
        .iter()
        .map(f)
        .collect::<Option<Vec<_>>>()
        .map(Stat::of)
}

pub fn compare(
    tool: &Tool,
    work: &Workload,
    ours: &[ChildReport],
    theirs: Vec<LlamaRun>,
    bytes: &DecodeBytes,
    wall: Option<&WallReport>,
) -> Comparison {
    let pairs = || ours.iter().zip(&theirs);
    let load_ttft = |r: &LlamaRun| Some(r.load_s? + r.ttft_s?);
    let step_bytes = bytes.with_kv(LLAMA_KV_ELEM_BYTES, tool.decode_positions(work)) as f64;
    let gb_s: Vec<f64> = theirs
        .iter()
        .map(|r| r.decode_tok_s * step_bytes / 1e9)
        .collect();
    let wall_gb_s = wall.and_then(|w| w.bandwidth.as_ref()).map(|b| b.gb_s);
    Comparison {
        tool: tool.describe(),
        version: theirs
            .first()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        note: matches!(tool, Tool::LlamaBench { .. }).then(|| {
            "llama-bench: no load or TTFT; its decode runs on an empty cache (ours after the \
             prompt); tok/s are its avg_ts"
                .to_string()
        }),
        load_to_first_token_s: all_of(&theirs, load_ttft),
        prefill_tok_s: Stat::of(theirs.iter().map(|r| r.prefill_tok_s)),
        decode_tok_s: Stat::of(theirs.iter().map(|r| r.decode_tok_s)),
        decode_step_ms: all_of(&theirs, |r| r.decode_step_ms_median),
        peak_rss_mb: all_of(&theirs, |r| r.vm_hwm_bytes.map(|b| b as f64 / 1e6)),
        speedup_prefill: Stat::of(pairs().map(|(o, t)| o.prefill_tok_s / t.prefill_tok_s)),
        speedup_decode: Stat::of(pairs().map(|(o, t)| o.decode_tok_s / t.decode_tok_s)),
        speedup_load_to_first_token: pairs()
            .map(|(o, t)| Some(load_ttft(t)? / (o.load_s + o.ttft_s)))
            .collect::<Option<Vec<_>>>()
            .map(Stat::of),
        decode_pct_of_wall: wall_gb_s.map(|w| Stat::of(gb_s.iter().map(|g| g / w * 100.0))),
        decode_gb_s: Stat::of(gb_s),
        runs: theirs,
    }
}

/// Our medians beside llama.cpp's, with the paired speed ratios.
pub fn print(c: &Comparison, ours: &crate::bench::Summary, prompt: usize, gen: usize) {
    println!();
    println!(
        "llama.cpp: {} ({}), interleaved with ours run by run",
        c.version, c.tool
    );
    if let Some(note) = &c.note {
        println!("note    {note}");
    }
    println!(
        "{:<44} {:>10} {:>10}   speed ours/llama.cpp, per run pair: median [min-max]",
        "metric (medians)", "ours", "llama.cpp"
    );
    let row = |name: &str, o: f64, t: Option<&Stat>, speed: Option<&Stat>, prec: usize| {
        let t = t.map_or("-".to_string(), |t| format!("{:.prec$}", t.median));
        let s = speed.map_or(String::new(), |s| {
            format!("{:.2}x [{:.2}-{:.2}]", s.median, s.min, s.max)
        });
        let line = format!("{name:<44} {o:>10.prec$} {t:>10}   {s}");
        println!("{}", line.trim_end());
    };
    row(
        "load + TTFT (s)",
        ours.load_to_first_token_s.median,
        c.load_to_first_token_s.as_ref(),
        c.speedup_load_to_first_token.as_ref(),
        3,
    );
    row(
        &format!("prefill @{prompt} (tok/s)"),
        ours.prefill_tok_s.median,
        Some(&c.prefill_tok_s),
        Some(&c.speedup_prefill),
        1,
    );
    row(
        &format!("decode @{gen}, forward only (tok/s)"),
        ours.decode_tok_s.median,
        Some(&c.decode_tok_s),
        Some(&c.speedup_decode),
        2,
    );
    row(
        "decode step, median (ms)",
        ours.decode_step_ms.median,
        c.decode_step_ms.as_ref(),
        None,
        1,
    );
    row(
        "peak RSS (MB)",
        ours.peak_rss_mb.median,
        c.peak_rss_mb.as_ref(),
        None,
        0,
    );
    println!(
        "llama.cpp decode: {:.2} tok/s = {:.2} GB/s{} (same weight bytes, f16 KV cache)",
        c.decode_tok_s.median,
        c.decode_gb_s.median,
        c.decode_pct_of_wall
            .as_ref()
            .map_or(String::new(), |p| format!(
                " = {:.0}% of the wall",
                p.median
            ))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_run_of_the_reference_script() {
        // The script's stdout with --reps 1 (see its main()): a summary holding the run.
        let stdout = r#"{
  "threads": 2,
  "reps": 1,
  "median": {"load_s": 0.5, "ttft_s": 0.25, "prefill_tok_s": 100.0, "decode_tok_s": 20.0,
             "decode_step_ms_median": 50.0, "load_to_first_token_s": 0.75, "peak_rss_mb": 300.0},
  "runs": [{"load_s": 0.5, "ttft_s": 0.25, "prefill_tok_s": 100.0, "decode_tok_s": 20.0,
            "decode_step_ms_median": 50.0, "vm_hwm_bytes": 300000000,
            "llama_cpp_python": "0.3.35"}]
}"#;
        let r = parse_script(stdout).unwrap();
        assert_eq!((r.load_s, r.ttft_s), (Some(0.5), Some(0.25)));
        assert_eq!((r.prefill_tok_s, r.decode_tok_s), (100.0, 20.0));
        assert_eq!(r.vm_hwm_bytes, Some(300_000_000));
        assert_eq!(r.version, "llama-cpp-python 0.3.35");
        assert!(parse_script(r#"{"runs": []}"#).is_err());
        assert!(parse_script("Traceback (most recent call last):").is_err());
    }

    #[test]
    fn reads_llama_bench_json() {
        // The shape of `llama-bench -o json` (tools/llama-bench/README.md): one object per
        // test, prompt processing (n_gen 0) and text generation (n_prompt 0).
        let stdout = r#"[
  {"build_commit": "abc1234", "build_number": 4321, "n_threads": 2, "n_prompt": 64,
   "n_gen": 0, "n_depth": 0, "avg_ns": 400000000, "avg_ts": 160.0, "stddev_ts": 0.0,
   "samples_ts": [160.0]},
  {"build_commit": "abc1234", "build_number": 4321, "n_threads": 2, "n_prompt": 0,
   "n_gen": 32, "n_depth": 0, "avg_ns": 800000000, "avg_ts": 40.0, "stddev_ts": 0.0,
   "samples_ts": [40.0]}
]"#;
        let r = parse_llama_bench(stdout, 64, 32).unwrap();
        assert_eq!((r.prefill_tok_s, r.decode_tok_s), (160.0, 40.0));
        assert_eq!(r.load_s, None);
        assert_eq!(r.version, "llama-bench abc1234 (build 4321)");
        let err = parse_llama_bench(stdout, 128, 32).unwrap_err();
        assert!(err.to_string().contains("n_prompt 128"), "{err}");
    }

    #[test]
    fn a_missing_path_is_one_clear_error() {
        let err = Tool::new(Path::new("/nonexistent/llama-bench"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--vs-llama-cpp /nonexistent/llama-bench: no such file"
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("ref.py");
        std::fs::write(&script, "").unwrap();
        match Tool::new(&script, Some("/opt/py".into())).unwrap() {
            Tool::Script { python, .. } => assert_eq!(python, "/opt/py"),
            other => panic!("{other:?}"),
        }
        let exe = dir.path().join("llama-bench");
        std::fs::write(&exe, "").unwrap();
        assert!(matches!(
            Tool::new(&exe, None).unwrap(),
            Tool::LlamaBench { .. }
        ));
    }

    #[test]
    fn a_failing_tool_reports_its_last_error_line() {
        let tool = Tool::Script {
            python: "sh".to_string(),
            script: PathBuf::from("-c"),
        };
        // `sh -c MODEL ...`: the "model" is a shell command that fails like a traceback.
        let work = Workload {
            prompt: 4,
            gen: 2,
            ctx: 16,
            ttft_prompt: 1,
            no_gen_loop: true,
            kv_cache: smollm3_model::KvType::F16,
        };
        let err = tool
            .run(
                Path::new("echo Traceback >&2; echo 'ImportError: no llama_cpp' >&2; exit 3"),
                &work,
                1,
            )
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.ends_with("ImportError: no llama_cpp"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
