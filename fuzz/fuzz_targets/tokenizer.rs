//! Arbitrary bytes through the tokenizer of `fixtures/gguf/smollm3-tiny-f32.gguf` (SmolLM3's
//! special tokens; run `cargo xtask gen-fixtures` first), loaded once.
//!
//! - As text (lossy UTF-8), encoded the way the chat path encodes user text
//!   (`encode(text, false)`, see `smollm3_chat::encode_chat`): never a special (control) token,
//!   every id in the vocabulary, and decoding gives the text back.
//! - As token ids (little-endian u32s, some out of range): `decode` and the streaming decoder
//!   agree, and an id out of range is an error, not a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smollm3_chat::{StreamDecoder, Tokenizer};

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/gguf/smollm3-tiny-f32.gguf"
        );
        Tokenizer::from_gguf(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo xtask gen-fixtures`)"))
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let ids = tok.encode(&text, false).expect("encoding text never fails");
        for &id in &ids {
            assert!(
                !tok.is_special(id),
                "user text {text:?} encoded to special token {id} ({:?})",
                tok.token_bytes(id).map(String::from_utf8_lossy)
            );
            assert!(
                (id as usize) < tok.vocab_size(),
                "id {id} out of the vocabulary"
            );
        }
        let back = tok.decode(&ids, false).expect("ids from encode decode");
        assert_eq!(back, text, "decode(encode(text)) != text");
        // The special-token-parsing path (the template's own markers) must not panic either.
        let _ = tok.encode(&text, true);
    } else {
        let vocab = tok.vocab_size() as u32;
        // Mostly in range, a few past the end.
        let ids: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (vocab + 8))
            .collect();
        let skip_special = mode & 2 != 0;
        let whole = tok.decode(&ids, skip_special);
        let mut stream = StreamDecoder::new(skip_special);
        let mut streamed = String::new();
        let mut failed = false;
        for &id in &ids {
            match stream.push(tok, id) {
                Ok(piece) => streamed.push_str(&piece),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        match whole {
            Ok(text) => {
                assert!(!failed, "decode succeeded but the stream decoder failed");
                streamed.push_str(&stream.finish());
                assert_eq!(streamed, text, "streamed decoding != decode");
            }
            Err(_) => assert!(
                failed || ids.iter().all(|&id| id < vocab),
                "decode failed but the stream decoder took every id"
            ),
        }
    }
});
