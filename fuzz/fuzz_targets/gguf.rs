//! Untrusted bytes as a GGUF file: `GgufFile::open`, everything read from its header (metadata,
//! tensor index, config, tokenizer, chat template), the model built from it and one token run
//! through it. Every failure must be an error: no panic, and no allocation sized by a count in
//! the file (libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb` catch those).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smollm3_model::{Config, GgufFile, LoadOptions, Model};

/// The reader takes a path (it memory-maps the file): one scratch file per process.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("smollm3-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write the scratch file");
    let Ok(gguf) = GgufFile::open(path) else {
        return;
    };
    assert_eq!(gguf.file_len(), data.len() as u64);
    let _ = gguf.metadata();
    let _ = gguf.tensor_infos();
    let _ = gguf.weight_summary();
    let _ = Config::from_gguf(&gguf);
    let _ = smollm3_chat::Tokenizer::from_gguf_content(gguf.content());
    if let Ok(template) = smollm3_chat::ChatTemplate::from_gguf_content(gguf.content()) {
        let chat = smollm3_chat::ChatRequest {
            messages: vec![smollm3_chat::Message::user("hi")],
            add_generation_prompt: true,
            ..Default::default()
        };
        let _ = template.render(&chat);
    }
    let Ok(model) = Model::from_gguf(&gguf, &LoadOptions::default()) else {
        return;
    };
    if let Ok(mut cache) = model.new_cache(8) {
        let _ = model.forward_last(&[0, 1], &mut cache);
    }
});
