//! The byte-level BPE tokenizer, built from GGUF metadata (or a `tokenizer.json`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf_meta::{read_content, TokenizerMeta};
use crate::{Error, Result};

/// The Llama-3 split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3` / `SMAUG`; HF's
/// tokenizer.json writes the contractions as `(?i:'s|'t|...)`, which matches the same strings).
pub const LLAMA3_SPLIT_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is split before BPE, from `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerKind {
    /// `llama-bpe` / `llama3` (HF Llama 3: whole pre-tokens found in the vocabulary are kept
    /// as is, `ignore_merges`) and `smaug-bpe` (SmolLM3; llama.cpp does not set ignore_merges).
    Llama3 { ignore_merges: bool },
    /// `smollm` (SmolLM2) and the other llama.cpp types that split digits one by one and then
    /// apply the GPT-2 regex (`starcoder`, `refact`, `codeshell`, ...): HF's
    /// `Sequence[Digits(individual_digits), ByteLevel(use_regex)]`.
    SmolLm,
    /// `gpt2`: the GPT-2 regex only.
    Gpt2,
}

impl PreTokenizerKind {
    /// The kind for a `tokenizer.ggml.pre` value (llama.cpp's names).
    pub fn from_gguf_name(pre: &str) -> Option<Self> {
        Some(match pre {
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3 {
                ignore_merges: true,
            },
            "smaug-bpe" => Self::Llama3 {
                ignore_merges: false,
            },
            "smollm" | "starcoder" | "refact" | "codeshell" => Self::SmolLm,
            "gpt2" | "gpt-2" => Self::Gpt2,
            _ => return None,
        })
    }

    fn build(self) -> Result<PreTokenizerWrapper> {
        let byte_level = |use_regex| ByteLevel::new(false, true, use_regex).into();
        Ok(match self {
            Self::Llama3 { .. } => {
                let split = Split::new(
                    SplitPattern::Regex(LLAMA3_SPLIT_REGEX.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| Error::Tokenizer(format!("split regex: {e}")))?;
                Sequence::new(vec![split.into(), byte_level(false)]).into()
            }
            Self::SmolLm => Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
            Self::Gpt2 => byte_level(true),
        })
    }
}

/// GPT-2's byte-to-character table, reversed: the character that stands for each byte in
/// byte-level BPE tokens maps back to the byte.
fn char_to_byte() -> &'static HashMap<char, u8> {
    static MAP: OnceLock<HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::with_capacity(256);
        let mut n = 0u32;
        for b in 0..=255u8 {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
            let c = if printable {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\u{FFFD}')
            };
            map.insert(c, b);
        }
        map
    })
}

/// SmolLM3's tokenizer (any byte-level BPE tokenizer in a GGUF file, in fact).
#[derive(Clone)]
pub struct Tokenizer {
    /// Parses added tokens (special and not) in the input.
    with_special: tokenizers::Tokenizer,
    /// Encodes special tokens' text as plain text (HF `encode_special_tokens = true`).
    plain: tokenizers::Tokenizer,
    /// Raw bytes of every token, by id (added tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    /// Added tokens, text -> (id, special).
    added: HashMap<String, (u32, bool)>,
    special_ids: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let content = read_content(path.as_ref())?;
        Self::from_gguf_content(&content)
    }

    /// Builds the tokenizer from already-read GGUF metadata.
    pub fn from_gguf_content(content: &candle_core::quantized::gguf_file::Content) -> Result<Self> {
        let meta = TokenizerMeta::from_content(content)?;
        Self::from_meta(&meta)
    }

    pub(crate) fn from_meta(meta: &TokenizerMeta) -> Result<Self> {
        if meta.model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "tokenizer.ggml.model = {:?} (only \"gpt2\", byte-level BPE, is supported)",
                meta.model
            )));
        }
        let pre_name = meta.pre.as_deref().unwrap_or("default");
        let pre = PreTokenizerKind::from_gguf_name(pre_name)
            .ok_or_else(|| Error::Unsupported(format!("tokenizer.ggml.pre = {pre_name:?}")))?;
        let mut vocab = Vocab::default();
        for (id, tok) in meta.tokens.iter().enumerate() {
            // First id wins for duplicated texts (as in llama.cpp's token_to_id map).
            vocab.entry(tok.clone()).or_insert(id as u32);
        }
        let mut merges = Vec::with_capacity(meta.merges.len());
        for (i, m) in meta.merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| Error::Metadata {
                key: "tokenizer.ggml.merges".into(),
                problem: format!("merge {i} ({m:?}) is not two tokens separated by a space"),
            })?;
            merges.push((a.to_string(), b.to_string()));
        }
        let ignore_merges = matches!(
            pre,
            PreTokenizerKind::Llama3 {
                ignore_merges: true
            }
        );
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("BPE from GGUF metadata: {e}")))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(pre.build()?));
        tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        // llama.cpp token types: 3 = CONTROL (special: parsed only when asked), 4 = USER_DEFINED
        // (always parsed, like HF's non-special added tokens).
        let mut specials = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (text, ty)) in meta.tokens.iter().zip(&meta.token_types).enumerate() {
            if vocab_id(&tok, text) != Some(id as u32) {
                continue; // a duplicate text: unreachable by text
            }
            match ty {
                3 => specials.push(AddedToken::from(text.clone(), true).normalized(false)),
                4 => user_defined.push(AddedToken::from(text.clone(), false).normalized(false)),
                _ => {}
            }
        }
        tok.add_special_tokens(specials)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tok.add_tokens(user_defined)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Self::finish(tok, meta.bos, meta.eos, meta.pad, meta.add_bos)
    }

    /// Loads a Hugging Face `tokenizer.json` (overrides the GGUF's tokenizer). The ids of
    /// `bos` / `eos` come from the GGUF or the caller; `None` leaves them unset.
    pub fn from_tokenizer_json(
        path: impl AsRef<Path>,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::finish(tok, bos, eos, None, false)
    }

    fn finish(
        mut tok: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        // The chat prompt is tokenized without a post-processor (HF adds no BOS to chat
        // prompts); `encode` prepends BOS itself when asked.
        tok.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let added_decoder = tok.get_added_tokens_decoder();
        let vocab_size = tok.get_vocab_size(true).max(
            added_decoder
                .keys()
                .map(|&id| id as usize + 1)
                .max()
                .unwrap_or(0),
        );
        let map = char_to_byte();
        let mut token_bytes = vec![Vec::new(); vocab_size];
        let mut special_ids = vec![false; vocab_size];
        for (text, id) in tok.get_vocab(false) {
            if let Some(slot) = token_bytes.get_mut(id as usize) {
                let mut bytes = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match map.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                *slot = bytes;
            }
        }
        let mut added = HashMap::new();
        for (id, t) in &added_decoder {
            if let Some(slot) = token_bytes.get_mut(*id as usize) {
                *slot = t.content.as_bytes().to_vec();
                special_ids[*id as usize] = t.special;
            }
            added.insert(t.content.clone(), (*id, t.special));
        }
        let mut plain = tok.clone();
        plain.set_encode_special_tokens(true);
        Ok(Tokenizer {
            with_special: tok,
            plain,
            token_bytes,
            added,
            special_ids,
            bos,
            eos,
            pad,
            add_bos,
        })
    }

    /// Writes this tokenizer as a Hugging Face `tokenizer.json`, e.g. to inspect or edit the
    /// tokenizer of a GGUF and load it back with [`Tokenizer::from_tokenizer_json`].
    pub fn save_tokenizer_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.with_special
            .save(path, true)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// The ids of the beginning- and end-of-sequence tokens, if known.
    pub fn bos_eos(&self) -> (Option<u32>, Option<u32>) {
        (self.bos, self.eos)
    }

    /// Number of token ids (model vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Encodes `text`. With `parse_special`, the text of added tokens (`<|im_start|>`, ...)
    /// becomes those tokens; without it, control tokens' text is encoded as plain text
    /// (llama.cpp `special=false`, HF `encode_special_tokens=true`). Never adds BOS.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tok = if parse_special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tok
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes raw text for completion: BOS first when the GGUF asks for it
    /// (`tokenizer.ggml.add_bos_token`). Chat prompts never get a BOS (as in HF).
    pub fn encode_for_completion(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend(self.encode(text, false)?);
        Ok(ids)
    }

    /// The raw bytes a token stands for (an added token: its text).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or(Error::TokenOutOfRange {
                id,
                vocab: self.vocab_size(),
            })
    }

    /// Decodes ids to text (invalid UTF-8 becomes U+FFFD, as in HF). `skip_special` drops
    /// special (control) tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The id of a token given its exact text (added tokens included).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.added
            .get(text)
            .map(|&(id, _)| id)
            .or_else(|| vocab_id(&self.with_special, text))
    }

    /// The id of a special (control) token given its text, e.g. `"<|im_start|>"`.
    pub fn special_token(&self, text: &str) -> Option<u32> {
        self.added
            .get(text)
            .and_then(|&(id, special)| special.then_some(id))
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.get(id as usize).copied().unwrap_or(false)
    }

    /// Texts of all added tokens (special and user-defined), longest first.
    pub fn added_token_texts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.added.keys().map(String::as_str).collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        v
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// End-of-generation ids: `<|im_end|>`, `<|end_of_text|>` (and `<|endoftext|>`,
    /// `<|eot_id|>` when present), plus the GGUF's eos. Sorted, no duplicates.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = [
            "<|im_end|>",
            "<|end_of_text|>",
            "<|endoftext|>",
            "<|eot_id|>",
        ]
        .iter()
        .filter_map(|t| self.token_to_id(t))
        .chain(self.eos)
        .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The underlying `tokenizers::Tokenizer` (parsing special tokens).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.with_special
    }
}

fn vocab_id(tok: &tokenizers::Tokenizer, text: &str) -> Option<u32> {
    tok.get_model_vocab_id(text)
}

trait ModelVocab {
    fn get_model_vocab_id(&self, text: &str) -> Option<u32>;
}

impl ModelVocab for tokenizers::Tokenizer {
    fn get_model_vocab_id(&self, text: &str) -> Option<u32> {
        use tokenizers::Model;
        self.get_model().token_to_id(text)
    }
}

/// Incremental detokenizer: feed ids one at a time, get text pieces whose concatenation equals
/// [`Tokenizer::decode`] of all ids. A UTF-8 sequence split across tokens is held back until it
/// is complete; bytes that can never form a character become U+FFFD exactly as in the full
/// decode. The tokenizer is passed to each call, so the decoder can live next to an
/// `Arc<Tokenizer>`.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
}

impl StreamDecoder {
    pub fn new(skip_special: bool) -> Self {
        StreamDecoder {
            pending: Vec::new(),
            skip_special,
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        if self.skip_special && tokenizer.is_special(id) {
            return Ok(String::new());
        }
        self.pending.extend_from_slice(tokenizer.token_bytes(id)?);
        Ok(self.drain(false))
    }

    /// Ends the stream: whatever is held back is returned (incomplete bytes as U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Whether bytes are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn drain(&mut self, flush: bool) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix is valid UTF-8 by `valid_up_to`.
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""),
                    );
                    start += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start += n;
                        }
                        None => {
                            // An incomplete sequence at the end: hold it back.
                            if flush {
                                out.push('\u{FFFD}');
                                start = self.pending.len();
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
