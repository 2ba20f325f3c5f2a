//! Constrained decoding: a grammar that masks the logits before each token is sampled, so only
//! tokens that keep the output valid can be drawn (JSON, a JSON Schema, a regular expression
//! or a Lark grammar).
//!
//! Why llguidance rather than our own: it is the engine llama.cpp and mistral.rs use, it
//! compiles the JSON Schema subset OpenAI's structured outputs accept (and more) and Lark
//! grammars, and it computes a mask over a 128k vocabulary by walking a token trie against the
//! grammar's lexer instead of testing tokens one by one: 0.85 ms a token all in for a JSON
//! schema, 1.4% of a 3B decode step (`cargo bench -p smollm3-gen --bench constraint`,
//! `docs/performance.md`).
//!
//! - [`Grammars`]: the engine for one tokenizer (its token trie is built once, 0.29 s for
//!   128k tokens; [`SharedGrammars`] shares one between sessions).
//! - [`Grammar`]: what a request asks for; [`Grammars::compile`] turns it into a
//!   [`Constraint`] or an [`GenError::InvalidRequest`] naming what the engine could not
//!   compile.
//! - [`Constraint`]: one output's state: [`Constraint::mask`] before sampling,
//!   [`Constraint::accept`] after, [`Constraint::can_end`] / [`Constraint::is_finished`] to
//!   know whether the output may or must end.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use smollm3_chat::Tokenizer;

use crate::{GenError, Result};

/// What an output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `response_format: json_object`).
    JsonObject,
    /// A JSON Schema (OpenAI's `json_schema`).
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect: `start: ...`, lexer rules in capitals).
    Lark(String),
}

/// The constraint engine for one tokenizer; see the module documentation.
pub struct Grammars {
    factory: ParserFactory,
    /// Every end-of-generation token (`<|im_end|>`, `<|end_of_text|>`): the engine knows one
    /// end token; the others may end a complete output as well.
    ends: Arc<[u32]>,
    /// The one the engine knows.
    end: u32,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").finish_non_exhaustive()
    }
}

/// Our tokenizer as llguidance sees it: every token's bytes in a trie (special tokens behind
/// the trie's marker byte, so no grammar can spell them by accident).
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar literals are text; bytes that are not UTF-8 tokenize as U+FFFD, which no
        // literal a user writes contains.
        self.tokenizer
            .encode(&String::from_utf8_lossy(s), false)
            .unwrap_or_default()
    }
}

impl Grammars {
    /// The engine for `tokenizer`, whose end-of-turn token (`<|im_end|>` for SmolLM3) ends a
    /// constrained output.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self> {
        let vocab = tokenizer.vocab_size();
        let ends: Arc<[u32]> = tokenizer.eog_ids().into();
        let eos = tokenizer
            .special_token("<|im_end|>")
            .or(ends.first().copied())
            .or(tokenizer.eos_id())
            .ok_or_else(|| GenError::InvalidRequest("the tokenizer has no end token".into()))?;
        let mut words = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let bytes = tokenizer
                .token_bytes(id)
                .map_err(|e| GenError::Backend(format!("reading the vocabulary: {e}")))?;
            words.push(if tokenizer.is_special(id) {
                [&[TokTrie::SPECIAL_TOKEN_MARKER], bytes].concat()
            } else {
                bytes.to_vec()
            });
        }
        let info = TokRxInfo::new(vocab as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let factory = ParserFactory::new_simple(&env)
            .map_err(|e| GenError::Backend(format!("constraint engine: {e}")))?;
        Ok(Grammars {
            factory,
            ends,
            end: eos,
        })
    }

    /// `grammar` compiled for a new output; a grammar the engine cannot compile is an
    /// [`GenError::InvalidRequest`] with the engine's words for what is wrong.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let top = match grammar {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Grammar::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let refused = |e: &dyn std::fmt::Display| {
            GenError::InvalidRequest(format!(
                "the {} does not compile: {}",
                grammar.kind(),
                one_line(e)
            ))
        };
        let parser = self.factory.create_parser(top).map_err(|e| refused(&e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(refused(&error));
        }
        Ok(Constraint {
            matcher,
            ends: self.ends.clone(),
            end: self.end,
        })
    }
}

/// `schema` as a `%json { ... }` item of a Lark grammar ([`Grammar::Lark`]), written compact
/// as [`Grammar::JsonSchema`] writes it: how a grammar embeds JSON (a tool call's arguments).
pub fn json_schema_lark(schema: &serde_json::Value) -> String {
    format!("%json {}", compact(schema.clone()))
}

/// `schema` with JSON written on one line, `", "` between items and `": "` after keys,
/// unless it says otherwise (llguidance's `x-guidance`). JSON's grammar allows any whitespace
/// between tokens, and a vocabulary has hundreds of whitespace tokens: random logits drew
/// 400 tokens of blanks without reaching a second key, and a small model can loop on
/// newlines the same way (a known complaint about JSON grammars in local runners).
fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

impl Grammar {
    fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonObject => "JSON object constraint",
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::Regex(_) => "regular expression",
            Grammar::Lark(_) => "grammar",
        }
    }
}

/// One [`Grammars`] for sessions that share a tokenizer (a server's slots, an engine's
/// sessions), built on the first request that asks for a constraint: building the trie of a
/// 128k vocabulary is not free, and most requests never need it.
#[derive(Clone, Default)]
pub struct SharedGrammars(Arc<std::sync::Mutex<Option<Arc<Grammars>>>>);

impl std::fmt::Debug for SharedGrammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGrammars").finish_non_exhaustive()
    }
}

impl SharedGrammars {
    /// The engine for `tokenizer`, built now if no session built it yet.
    pub fn get(&self, tokenizer: &Arc<Tokenizer>) -> Result<Arc<Grammars>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(grammars) = slot.as_ref() {
            return Ok(grammars.clone());
        }
        let grammars = Arc::new(Grammars::new(tokenizer.clone())?);
        *slot = Some(grammars.clone());
        Ok(grammars)
    }
}

/// One output's constraint; see the module documentation.
pub struct Constraint {
    matcher: Matcher,
    ends: Arc<[u32]>,
    end: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("finished", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Sets the logit of every token that would break the output to −∞ (the end tokens'
    /// too, until the output is complete). Logits past the vocabulary (a padded output head)
    /// are masked as well.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self.matcher.compute_mask().map_err(engine_error)?;
        let may_end = allowed.is_allowed(self.end);
        let known = allowed.len();
        for (id, logit) in logits.iter_mut().enumerate() {
            let token = id as TokenId;
            let end = may_end && self.ends.contains(&token);
            if id >= known || !(allowed.is_allowed(token) || end) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// `token` was drawn (from the masked logits) and is now part of the output.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher.consume_token(token).map_err(engine_error)
    }

    /// The output so far is complete: it may end here.
    pub fn can_end(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Nothing may follow the output so far: it must end here.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

fn engine_error(e: impl std::fmt::Display) -> GenError {
    GenError::Backend(format!("constraint engine: {}", one_line(&e)))
}

/// The engine's message on one line: it quotes the regex parser's, which span several, and
/// a panic inside the engine (which it catches and returns as an error) carries a backtrace.
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let text = text.split("<backtrace>").next().unwrap_or_default();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
