//! `smollm3 info`, `logits` and `greedy`: look inside a model file and run its forward pass
//! without the chat machinery.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;
use smollm3_model::{GgufFile, Model};

use crate::args::{parse_tokens, ModelArgs, ModelSource};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  smollm3 info --model SmolLM3-3B-Q4_K_M.gguf\n  smollm3 info --model ggml-org/SmolLM3-3B-GGUF:q4_k_m --json"
)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelSource,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  smollm3 logits --model M.gguf --tokens 1,2,3 --top 5\n  smollm3 logits --model M.gguf --tokens 1,2,3 --step   # through the KV cache one by one"
)]
pub struct LogitsArgs {
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
}

#[derive(Args)]
#[command(after_help = "Example:\n  smollm3 greedy --model M.gguf --tokens 1,2,3 -n 16")]
pub struct GreedyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated prompt token ids.
    #[arg(long, value_name = "IDS")]
    tokens: String,
    /// Number of tokens to generate.
    #[arg(short = 'n', long = "n", default_value_t = 32)]
    n: usize,
}

/// `smollm3 info`: what the file holds, as text or JSON.
pub fn info(args: &InfoArgs) -> Result<()> {
    let path = &args.model.resolve()?;
    let as_json = args.json;
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
    // A truncated download still shows its metadata, and says what is wrong with its data.
    let data_error = gguf.check_tensor_data().err().map(|e| e.to_string());
    let report = json!({
        "file": path.display().to_string(),
        "file_bytes": gguf.file_len(),
        "data_error": data_error,
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
    // After the report, so what the file holds is shown; the exit status says it is broken.
    let broken = || match &data_error {
        Some(e) => Err(anyhow::anyhow!("{e}")),
        None => Ok(()),
    };
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return broken();
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
    writeln!(
        out,
        "tensor data   {}",
        if data_error.is_some() {
            "BROKEN (see the error)"
        } else {
            "every tensor inside the file"
        }
    )?;
    drop(out);
    broken()
}

/// `smollm3 logits`: the top logits at every position, one JSON object per line.
pub fn logits(a: &LogitsArgs) -> Result<()> {
    let (args, tokens, top, step) = (&a.model, &a.tokens, a.top, a.step);
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

/// `smollm3 greedy`: the argmax continuation, as a JSON array of ids.
pub fn greedy(a: &GreedyArgs) -> Result<()> {
    let (args, tokens, n) = (&a.model, &a.tokens, a.n);
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
