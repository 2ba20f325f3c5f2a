//! `cargo xtask <command>`: thin dispatcher; the work lives in the library modules.

mod bench;
mod bench_batch;
mod bench_busy;
mod bench_child;
mod bench_llama;
mod bench_lookup;
mod bench_server;
mod bench_wall;
mod fetch;
mod fuzz;
mod soak;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use xtask::fixtures;

#[derive(Parser)]
#[command(name = "xtask", about = "smollm3-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the deterministic test GGUFs described in fixtures/README.md.
    GenFixtures {
        /// Output directory [default: <workspace>/fixtures/gguf].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only generate the fixture with this file name (repeatable).
        #[arg(long, value_name = "FILE_NAME")]
        only: Vec<String>,
        /// Also write the ~1.9 GB random-weight GGUF with the real SmolLM3-3B shapes (Q4_K_M).
        #[arg(long)]
        with_3b: bool,
    },
    /// Measure load time, time to first token, prefill and decode speed and peak RSS
    /// (docs/performance.md).
    Bench(bench::BenchArgs),
    /// Serve the model in-process and measure time to first token and tok/s per stream with
    /// 1, 2 and 4 concurrent streaming clients, and what HTTP costs per token.
    BenchServer(bench_server::ServerBenchArgs),
    /// Batched decoding in the model alone: total and per-sequence tok/s for 1, 2, 4 and 8
    /// sequences decoded in lockstep (`Model::forward_batch`).
    BenchBatch(bench_batch::BatchBenchArgs),
    /// Prompt-lookup speculative decoding on a quoting task and on free text: decode tok/s
    /// with drafts and without, and the drafted tokens taken.
    BenchLookup(bench_lookup::LookupBenchArgs),
    /// Download a SmolLM3 GGUF (default: SmolLM3-3B Q4_K_M) into the Hugging Face cache and
    /// print where it is; a file already in the cache is not downloaded again.
    FetchWeights(fetch::FetchArgs),
    /// Build the cargo-fuzz targets of fuzz/ and run each for a bounded time; fails on a crash
    /// and prints where its reproducer is (docs/reliability.md, "Fuzzing").
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate the GGUF seeds of the gguf fuzz target (fuzz/corpus/gguf/).
    FuzzSeeds,
    /// Run the real server under mixed, hostile load from many clients for a bounded time and
    /// report what it served, its errors, time to first token and memory
    /// (docs/reliability.md, "Load").
    Soak(soak::SoakArgs),
    /// One measured run in a fresh process (spawned by `bench`).
    #[command(hide = true)]
    BenchChild(bench_child::ChildArgs),
    /// Burns one core until killed or orphaned (`bench --busy-core`).
    #[command(hide = true)]
    Spin,
}

fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the workspace root. `cargo run` (the `cargo xtask` alias) sets
    // CARGO_MANIFEST_DIR for the process: read it at run time first, because the value built
    // in is that of whichever checkout compiled the binary, and two checkouts sharing one
    // CARGO_TARGET_DIR share it (cargo does not rebuild for another path): a `cargo xtask
    // fuzz` in one tree ran in the other. Run directly (CI runs the test build's
    // `target/debug/xtask`), the checkout is the one the current directory is in.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        if let Some(root) = PathBuf::from(dir).parent() {
            return root.to_path_buf();
        }
    }
    let here = std::env::current_dir().unwrap_or_default();
    if let Some(root) = here
        .ancestors()
        .find(|dir| dir.join("xtask/Cargo.toml").is_file())
    {
        return root.to_path_buf();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::GenFixtures { out, only, with_3b } => gen_fixtures(out, only, with_3b),
        Command::Bench(args) => bench::run(args, &workspace_root()),
        Command::BenchServer(args) => {
            // The server measured in-process runs as `smollm3-web` does.
            smollm3_model::candle_pool::shorten_idle_spin();
            smollm3_model::allocator::keep_freed_tensor_memory();
            bench_server::run(args, &workspace_root())
        }
        Command::BenchBatch(args) => {
            smollm3_model::candle_pool::shorten_idle_spin();
            smollm3_model::allocator::keep_freed_tensor_memory();
            bench_batch::run(args, &workspace_root())
        }
        Command::BenchLookup(args) => {
            smollm3_model::candle_pool::shorten_idle_spin();
            smollm3_model::allocator::keep_freed_tensor_memory();
            bench_lookup::run(args, &workspace_root())
        }
        Command::BenchChild(args) => {
            // As the smollm3 binaries do (the engine measured is theirs).
            smollm3_model::candle_pool::shorten_idle_spin();
            smollm3_model::allocator::keep_freed_tensor_memory();
            bench_child::run(args)
        }
        Command::Spin => bench_busy::spin(),
        Command::FetchWeights(args) => fetch::run(args),
        Command::Fuzz(args) => fuzz::run(args, &workspace_root()),
        Command::FuzzSeeds => fuzz::write_seeds(&workspace_root()),
        Command::Soak(args) => soak::run(args, &workspace_root()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // One line whatever RUST_BACKTRACE says (anyhow's Debug would add a backtrace).
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn gen_fixtures(out: Option<PathBuf>, only: Vec<String>, with_3b: bool) -> Result<()> {
    let out = out.unwrap_or_else(|| workspace_root().join(fixtures::DEFAULT_OUT_DIR));
    let mut specs = fixtures::fixture_specs();
    if with_3b {
        specs.push(fixtures::smollm3_3b_spec());
    }
    if !only.is_empty() {
        if let Some(bad) = only
            .iter()
            .find(|n| !specs.iter().any(|s| &s.file_name == *n))
        {
            bail!(
                "unknown fixture {bad:?}; known: {:?}",
                specs.iter().map(|s| &s.file_name).collect::<Vec<_>>()
            );
        }
        specs.retain(|s| only.contains(&s.file_name));
    }
    let start = std::time::Instant::now();
    let digests = fixtures::generate_all(&specs, &out)?;
    println!(
        "wrote {} file(s) to {} in {:.1?}",
        digests.len(),
        out.display(),
        start.elapsed()
    );
    for d in &digests {
        let name = d.path.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<32} {:>12} {}", d.size, d.sha256);
    }
    Ok(())
}
