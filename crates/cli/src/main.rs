//! `smollm3`: inspect and run SmolLM3 GGUF models from the command line.

mod chat_cmds;
mod chat_repl;
mod model_args;
mod run_cmd;
mod tools_cmd;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::json;
use smollm3_model::{GgufFile, Model};

use model_args::{parse_tokens, ModelArgs};

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
    Run(Box<run_cmd::RunArgs>),
    /// Chat in the terminal: streamed answers, history, /commands like `ollama run`.
    Chat(Box<chat_repl::ChatArgs>),
    /// Parse tool calls in model output (stdin) and print them as JSON, one per line.
    ParseToolCalls(tools_cmd::ParseToolCallsArgs),
    /// Show a model's architecture, size, quantization, context, NoPE layers, rope and tokenizer.
    #[command(
        after_help = "Examples:\n  smollm3 info --model SmolLM3-3B-Q4_K_M.gguf\n  smollm3 info --model ggml-org/SmolLM3-3B-GGUF:q4_k_m --json"
    )]
    Info {
        #[command(flatten)]
        model: model_args::ModelSource,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the top logits at every position of a token sequence, one JSON object per line.
    #[command(
        after_help = "Examples:\n  smollm3 logits --model M.gguf --tokens 1,2,3 --top 5\n  smollm3 logits --model M.gguf --tokens 1,2,3 --step   # through the KV cache one by one"
    )]
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated token ids.
        #[arg(long, value_name = "IDS")]
        tokens: String,
        /// How many (token, logit) pairs to print per position.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Feed the tokens one at a time through the KV cache instead of in one prefill.
        #[arg(long)]
        step: bool,
    },
    /// Greedy (argmax) continuation of a token sequence, printed as a JSON array of ids.
    #[command(after_help = "Example:\n  smollm3 greedy --model M.gguf --tokens 1,2,3 -n 16")]
    Greedy {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated prompt token ids.
        #[arg(long, value_name = "IDS")]
        tokens: String,
        /// Number of tokens to generate.
        #[arg(short = 'n', long = "n", default_value_t = 32)]
        n: usize,
    },
    /// Token ids of a text, with the GGUF's own tokenizer.
    #[command(
        after_help = "Examples:\n  smollm3 tokenize --model M.gguf --text \"Hello world\"\n  smollm3 tokenize --model M.gguf --text \"<|im_start|>user\" --special --json"
    )]
    Tokenize(chat_cmds::TokenizeArgs),
    /// Text of comma-separated token ids.
    #[command(after_help = "Example:\n  smollm3 detokenize --model M.gguf --tokens 9906,1917")]
    Detokenize(chat_cmds::DetokenizeArgs),
    /// Render a conversation with the GGUF's chat template (or its token ids with --tokens).
    #[command(
        after_help = "Examples:\n  smollm3 template --model M.gguf --messages conv.json\n  smollm3 template --model M.gguf --messages conv.json --no-think --tools tools.json --tokens"
    )]
    Template(chat_cmds::TemplateArgs),
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
        "{} ({}; cpu features: {}; {} threads)",
        env!("CARGO_PKG_VERSION"),
        kernels,
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
    let matches = Cli::command().version(version_text()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(run_cmd::EXIT_INTERRUPTED),
        // `smollm3 logits ... | head` closes the pipe early: that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
            if tools_cmd::run(&a)? {
                anyhow::bail!("some tool calls are malformed (see the `error` fields)");
            }
            Ok(Outcome::Done)
        }
        Command::Run(a) => Ok(if run_cmd::run(&a)? {
            Outcome::Interrupted
        } else {
            Outcome::Done
        }),
        Command::Chat(a) => done(chat_repl::run(&a)),
        Command::Info { model, json } => done(info(&model.resolve()?, json)),
        Command::Logits {
            model,
            tokens,
            top,
            step,
        } => done(logits(&model, &tokens, top, step)),
        Command::Greedy { model, tokens, n } => done(greedy(&model, &tokens, n)),
        Command::Tokenize(a) => done(chat_cmds::tokenize(&a)),
        Command::Detokenize(a) => done(chat_cmds::detokenize(&a)),
        Command::Template(a) => done(chat_cmds::template(&a)),
    }
}

fn info(path: &std::path::Path, as_json: bool) -> Result<()> {
    let gguf = GgufFile::open(path)?;
    let config = smollm3_model::Config::from_gguf(&gguf)?;
    let summary = gguf.weight_summary();
    let parameters = summary.parameters;
    let types: std::collections::BTreeMap<String, usize> =
        summary.tensor_types.into_iter().collect();
    let token_text = |key: &str| -> Option<serde_json::Value> {
        let id = gguf.get_usize(key).ok().flatten()?;
        let text = gguf.string_array_item("tokenizer.ggml.tokens", id);
        Some(json!({"id": id, "text": text}))
    };
    let tokenizer = json!({
        "model": gguf.get_string("tokenizer.ggml.model").ok().flatten(),
        "pre": gguf.get_string("tokenizer.ggml.pre").ok().flatten(),
        "tokens": gguf.array_len("tokenizer.ggml.tokens"),
        "merges": gguf.array_len("tokenizer.ggml.merges"),
        "bos": token_text("tokenizer.ggml.bos_token_id"),
        "eos": token_text("tokenizer.ggml.eos_token_id"),
        "padding": token_text("tokenizer.ggml.padding_token_id"),
        "chat_template": gguf.get_string("tokenizer.chat_template").ok().flatten().is_some(),
    });
    let report = json!({
        "file": path.display().to_string(),
        "file_bytes": gguf.file_len(),
        "name": gguf.get_string("general.name").ok().flatten(),
        "architecture": config.architecture.gguf_name(),
        "parameters": parameters,
        "tensor_types": types,
        "config": config,
        "max_context": config.max_context(),
        "rope_layers": config.num_layers - config.nope_layers.len(),
        "tokenizer": tokenizer,
    });
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let c = &config;
    writeln!(
        out,
        "file          {} ({:.1} MB)",
        path.display(),
        gguf.file_len() as f64 / 1e6
    )?;
    if let Some(name) = report["name"].as_str() {
        writeln!(out, "name          {name}")?;
    }
    writeln!(out, "architecture  {}", c.architecture.gguf_name())?;
    writeln!(
        out,
        "parameters    {} ({:.2} B)",
        parameters,
        parameters as f64 / 1e9
    )?;
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    writeln!(out, "tensor types  {}", types.join(", "))?;
    writeln!(
        out,
        "layers        {} (hidden {}, ffn {}, vocab {})",
        c.num_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    )?;
    writeln!(
        out,
        "attention     {} query heads, {} KV heads (GQA {}:1), head dim {}",
        c.num_heads,
        c.num_kv_heads,
        c.gqa_group(),
        c.head_dim
    )?;
    writeln!(
        out,
        "context       {} (max with scaling: {})",
        c.context_length,
        c.max_context()
    )?;
    writeln!(
        out,
        "NoPE layers   {}",
        if c.nope_layers.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", c.nope_layers)
        }
    )?;
    let scaling = match &c.rope_scaling {
        None => "none".to_string(),
        Some(s) => serde_json::to_string(s)?,
    };
    writeln!(
        out,
        "rope          theta {}, scaling {scaling}",
        c.rope_theta
    )?;
    writeln!(out, "rms norm eps  {:e}", c.rms_norm_eps as f32)?;
    writeln!(
        out,
        "embeddings    {}",
        if c.tied_embeddings {
            "tied (output = token_embd)"
        } else {
            "separate output.weight"
        }
    )?;
    let t = &report["tokenizer"];
    writeln!(
        out,
        "tokenizer     {} / {}, {} tokens, {} merges, bos {}, eos {}, chat template {}",
        t["model"].as_str().unwrap_or("?"),
        t["pre"].as_str().unwrap_or("?"),
        t["tokens"],
        t["merges"],
        t["bos"]["text"].as_str().unwrap_or("-"),
        t["eos"]["text"].as_str().unwrap_or("-"),
        if t["chat_template"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    )?;
    Ok(())
}

fn logits(args: &ModelArgs, tokens: &str, top: usize, step: bool) -> Result<()> {
    let tokens = parse_tokens(tokens)?;
    let model = args.load()?;
    let mut cache = model.new_cache(args.context(&model, tokens.len())?)?;
    let rows: Vec<Vec<f32>> = if step {
        let mut rows = Vec::with_capacity(tokens.len());
        for &t in &tokens {
            rows.push(model.forward_last(&[t], &mut cache)?.to_vec1()?);
        }
        rows
    } else {
        model.forward(&tokens, &mut cache)?.to_vec2()?
    };
    let mut out = std::io::stdout().lock();
    for (pos, row) in rows.iter().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top: Vec<_> = order
            .iter()
            .take(top)
            .map(|&i| json!([i, row[i]]))
            .collect();
        writeln!(out, "{}", json!({"pos": pos, "top": top}))?;
    }
    Ok(())
}

fn greedy(args: &ModelArgs, tokens: &str, n: usize) -> Result<()> {
    let prompt = parse_tokens(tokens)?;
    let model: Model = args.load()?;
    let mut cache = model.new_cache(args.context(&model, prompt.len() + n)?)?;
    let mut generated = Vec::with_capacity(n);
    if n > 0 {
        let mut logits = model.forward_last(&prompt, &mut cache)?;
        loop {
            let next: u32 = logits.argmax(0)?.to_scalar()?;
            generated.push(next);
            if generated.len() == n {
                break;
            }
            logits = model.forward_last(&[next], &mut cache)?;
        }
    }
    println!("{}", serde_json::to_string(&generated)?);
    Ok(())
}
