//! Untrusted bytes as a GGUF file, the header only: `GgufFile::open`, its metadata, tensor
//! index, config and the tensor table checked against the file (`check_tensor_data`). The
//! `gguf` target goes on to the tokenizer, the template, the model and a forward pass, which
//! makes it ~40 inputs a second; this one covers the reader itself at thousands a second.
//! Every failure must be an error: no panic, and no allocation sized by a count in the file
//! (libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb` catch those).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smollm3_model::{Config, GgufFile};

/// The reader takes a path (it memory-maps the file): one scratch file per process.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "smollm3-fuzz-gguf-header-{}.gguf",
            std::process::id()
        ))
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
    let _ = gguf.weight_summary();
    let _ = Config::from_gguf(&gguf);
    if gguf.check_tensor_data().is_ok() {
        // Every tensor the check passed lies inside the file.
        for (name, _, _) in gguf.tensor_infos() {
            assert!(gguf.has_tensor(&name));
        }
    }
});
