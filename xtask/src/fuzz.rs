//! `cargo xtask fuzz`: builds the cargo-fuzz targets of `fuzz/` and runs each for a bounded
//! time (docs/reliability.md, "Fuzzing"); `cargo xtask fuzz-seeds` writes the GGUF seeds.
//!
//! Corpus layout: the committed corpus is `fuzz/corpus/<target>/` (cargo-fuzz's place for it)
//! and is only read; what a run finds goes to `fuzz/found/<target>/` (git-ignored, kept between
//! local runs), so a run leaves the committed files as they are. Crash
//! reproducers go to `fuzz/artifacts/<target>/` (git-ignored; a reproducer worth keeping is
//! copied into `fuzz/corpus/<target>/` by hand).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use xtask::fixtures::{self, FixtureSpec, QuantScheme, VocabChoice};

/// Every target in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "gguf",
    "gguf_header",
    "tokenizer",
    "tool_calls",
    "chat_request",
    "template",
];

/// What the tokenizer and template targets load.
const FIXTURE: &str = "fixtures/gguf/smollm3-tiny-f32.gguf";

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Total fuzzing time in minutes, split evenly between the targets run (the build is not
    /// counted).
    #[arg(long, conflicts_with = "seconds_each", required_unless_present_any = ["seconds_each", "build_only"])]
    minutes: Option<f64>,
    /// Seconds of fuzzing for each target instead (CI runs `--seconds-each 18`).
    #[arg(long)]
    seconds_each: Option<u64>,
    /// Only this target (repeatable) [default: all of them].
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// cargo-fuzz's sanitizer: `address` (ASan) or `none` (about twice the executions per
    /// second; Rust code is memory-safe outside `unsafe`).
    #[arg(long, default_value = "address")]
    sanitizer: String,
    /// Build with `fuzz/`'s dev profile (opt-level 1) instead of release: a cold build takes
    /// about 80% of the time for about 75% of the executions per second (CI: `--dev
    /// --sanitizer none`; docs/reliability.md, "Measured").
    #[arg(long)]
    dev: bool,
    /// Only build the targets.
    #[arg(long)]
    build_only: bool,
}

/// The cargo-fuzz command line, run from the workspace root (cargo-fuzz finds `fuzz/`).
/// `RUSTC_BOOTSTRAP=1`: cargo-fuzz passes `-Z` flags (sanitizers, coverage passes), which
/// stable rustc accepts only so.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    cmd
}

/// `cargo fuzz build|run` with the flags that pick the build (sanitizer, profile): the same for
/// the build, each run and the replay command printed for a crash.
fn build_flags(args: &FuzzArgs) -> Vec<&str> {
    let mut flags = vec!["--sanitizer", args.sanitizer.as_str()];
    if args.dev {
        flags.push("--dev");
    }
    flags
}

/// What one target's run reported.
struct Outcome {
    target: String,
    seconds: u64,
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    /// libFuzzer's last `cov:` / `corp:` figures.
    coverage: Option<String>,
    /// Reproducers written by this run (empty: no crash).
    crashes: Vec<PathBuf>,
    ok: bool,
}

pub fn run(args: FuzzArgs, root: &Path) -> Result<()> {
    for t in &args.targets {
        ensure!(
            TARGETS.contains(&t.as_str()),
            "unknown fuzz target {t:?}; known: {TARGETS:?}"
        );
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS
            .iter()
            .copied()
            .filter(|t| args.targets.iter().any(|a| a == t))
            .collect()
    };
    let version = cargo_fuzz(root).arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz is not installed: `cargo install cargo-fuzz --locked`");
    }
    ensure!(
        root.join(FIXTURE).is_file(),
        "{FIXTURE} is missing (the tokenizer and template targets load it): run `cargo xtask gen-fixtures`"
    );

    let start = Instant::now();
    let mut build = cargo_fuzz(root);
    build.arg("build").args(build_flags(&args));
    if targets.len() == 1 {
        build.arg(targets[0]);
    }
    let status = build.status().context("running cargo fuzz build")?;
    ensure!(status.success(), "cargo fuzz build failed ({status})");
    println!("fuzz targets built in {:.1?}", start.elapsed());
    if args.build_only {
        return Ok(());
    }

    let seconds = match (args.seconds_each, args.minutes) {
        (Some(s), _) => s,
        (None, Some(m)) => ((m * 60.0) / targets.len() as f64).round().max(1.0) as u64,
        (None, None) => unreachable!("clap requires one"),
    };
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(root, target, seconds, &args)?);
    }

    println!(
        "\n{:<14} {:>6} {:>12} {:>9}  coverage / result",
        "target", "secs", "execs", "execs/s"
    );
    for o in &outcomes {
        let num = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let result = if o.ok {
            o.coverage.clone().unwrap_or_default()
        } else if o.crashes.is_empty() {
            "FAILED (no reproducer written; see the output above)".to_string()
        } else {
            format!("CRASH: {} reproducer(s)", o.crashes.len())
        };
        println!(
            "{:<14} {:>6} {:>12} {:>9}  {result}",
            o.target,
            o.seconds,
            num(o.execs),
            num(o.execs_per_sec)
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        for c in &o.crashes {
            let rel = c.strip_prefix(root).unwrap_or(c).display();
            println!(
                "reproducer: {rel}\n  replay: RUSTC_BOOTSTRAP=1 cargo fuzz run {} {} {rel}",
                build_flags(&args).join(" "),
                o.target
            );
        }
    }
    bail!(
        "fuzzing found a failure in {}",
        failed
            .iter()
            .map(|o| o.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// The directory of `fuzz/corpus/` a target starts from.
fn seed_dir(target: &str) -> &str {
    match target {
        "gguf_header" => "gguf",
        other => other,
    }
}

fn run_target(root: &Path, target: &str, seconds: u64, args: &FuzzArgs) -> Result<Outcome> {
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("found").join(target);
    // The header target starts from the whole target's GGUFs (no second copy committed).
    let seeds = fuzz.join("corpus").join(seed_dir(target));
    let artifacts = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    std::fs::create_dir_all(&seeds)?;
    let before = files_in(&artifacts);
    println!("== fuzz {target}: {seconds} s");
    let mut child = cargo_fuzz(root)
        .arg("run")
        .args(build_flags(args))
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args([
            format!("-max_total_time={seconds}"),
            // Also the default -malloc_limit_mb: one allocation over 2 GB is a crash (a size
            // taken from the input).
            "-rss_limit_mb=2048".to_string(),
            // An input that takes this long is a hang, reported as a crash.
            "-timeout=30".to_string(),
            "-print_final_stats=1".to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut execs = None;
    let mut execs_per_sec = None;
    let mut coverage = None;
    let stat =
        |line: &str, key: &str| -> Option<u64> { line.strip_prefix(key)?.trim().parse().ok() };
    // libFuzzer reports on stderr: passed through, and its figures picked up on the way.
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        eprintln!("{line}");
        if let Some(n) = stat(&line, "stat::number_of_executed_units:") {
            execs = Some(n);
        } else if let Some(n) = stat(&line, "stat::average_exec_per_sec:") {
            execs_per_sec = Some(n);
        } else if line.starts_with('#') && line.contains(" cov: ") {
            if let Some(i) = line.find("cov: ") {
                let figures: Vec<&str> = line[i..].split_whitespace().take(6).collect();
                coverage = Some(figures.join(" "));
            }
        }
    }
    let status = child.wait()?;
    let crashes = files_in(&artifacts)
        .difference(&before)
        .cloned()
        .collect::<Vec<_>>();
    Ok(Outcome {
        target: target.to_string(),
        seconds,
        execs,
        execs_per_sec,
        coverage,
        ok: status.success() && crashes.is_empty(),
        crashes,
    })
}

/// Writes `fuzz/corpus/gguf/`: two whole, loadable GGUFs far smaller than the test fixtures (a
/// 512-token vocabulary, hidden size 16 or 32, one layer), and near-misses made from them.
pub fn write_seeds(root: &Path) -> Result<()> {
    let out = root.join("fuzz/corpus/gguf");
    std::fs::create_dir_all(&out)?;
    let tmp = tempfile::tempdir()?;
    let micro = |file_name: &str, quant: QuantScheme, arch: &str, hidden: usize| FixtureSpec {
        arch: arch.to_string(),
        vocab: VocabChoice::Small { n_base: 256 },
        hidden,
        ffn: 2 * hidden,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        ctx: 64,
        ..FixtureSpec::tiny(file_name, quant, 11)
    };
    let mut written = Vec::new();
    // Q8_0 rows need a multiple of 32 input features; F32 takes 16.
    for spec in [
        micro("smollm3-micro-f32.gguf", QuantScheme::F32, "smollm3", 16),
        micro("llama-micro-q8_0.gguf", QuantScheme::Q8_0, "llama", 32),
    ] {
        let path = fixtures::generate(&spec, tmp.path())?;
        let bytes = std::fs::read(&path)?;
        written.push((spec.file_name.clone(), bytes.clone()));
        if spec.arch == "smollm3" {
            // The two crashes the CLI's hostile-variant test found (docs/reliability.md).
            written.push((
                "regression-alignment-zero.gguf".into(),
                with_u32_value(&bytes, "general.alignment", 0)?,
            ));
            written.push((
                "regression-block-count-max.gguf".into(),
                with_u32_value(&bytes, "smollm3.block_count", u32::MAX)?,
            ));
        }
        if spec.quant == QuantScheme::Q8_0 {
            // Near misses: the header alone, cut inside the tensor data, GGUF v2, bad magic.
            let header = bytes.len().min(4096);
            written.push(("truncated-header.gguf".into(), bytes[..header].to_vec()));
            written.push((
                "truncated-tensors.gguf".into(),
                bytes[..bytes.len() - 1000].to_vec(),
            ));
            let mut v2 = bytes.clone();
            v2[4..8].copy_from_slice(&2u32.to_le_bytes());
            written.push(("version2.gguf".into(), v2));
            let mut magic = bytes[..64].to_vec();
            magic[..4].copy_from_slice(b"GGML");
            written.push(("bad-magic.gguf".into(), magic));
        }
    }
    for (name, bytes) in &written {
        std::fs::write(out.join(name), bytes)?;
        println!("{name:<28} {:>8} bytes", bytes.len());
    }
    Ok(())
}

/// `bytes` (a GGUF) with the value of the `u32` metadata entry `key` set to `value`.
fn with_u32_value(bytes: &[u8], key: &str, value: u32) -> Result<Vec<u8>> {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .with_context(|| format!("no {key} in the seed"))?
        + key.len();
    ensure!(
        bytes.get(at..at + 4) == Some(&4u32.to_le_bytes()[..]),
        "{key} is not a u32 in the seed"
    );
    let mut out = bytes.to_vec();
    out[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    Ok(out)
}
