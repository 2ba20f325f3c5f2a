//! Conversations of the web chat, one JSON file each under `<data dir>/conversations/`.
//! A file is written to a temporary file in the same directory and renamed over the old one,
//! so a crash leaves the old version or the new one, never half a file. Ids are generated
//! here and checked on the way in (hex and `-` only), so a request cannot name a path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use smollm3_chat::Message;
use smollm3_gen::{Grammar, SamplingParams, Stats};

/// What can go wrong with the conversation files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no conversation {0:?}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a conversation file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One exchange's figures, shown under the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnStats {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub decode_tokens_per_second: f64,
    /// Seconds spent in the reasoning block ("Thought for 3.2 s").
    pub thought_seconds: f64,
    /// `stop`, `length`, `tool_calls` or `cancelled`.
    pub finish_reason: String,
    /// Tokens guessed by prompt lookup, and of those the ones the model agreed with (older
    /// conversations on disk have neither: zero).
    #[serde(default)]
    pub draft_tokens: usize,
    #[serde(default)]
    pub draft_accepted: usize,
}

impl TurnStats {
    pub fn from_stats(stats: &Stats, finish_reason: &str, thought_seconds: f64) -> Self {
        TurnStats {
            prompt_tokens: stats.prompt_tokens,
            cached_tokens: stats.cached_tokens,
            generated_tokens: stats.generated_tokens,
            time_to_first_token_ms: stats.time_to_first_token_ms,
            decode_tokens_per_second: stats.decode_tokens_per_second,
            thought_seconds,
            finish_reason: finish_reason.to_string(),
            draft_tokens: stats.draft_tokens,
            draft_accepted: stats.draft_accepted,
        }
    }
}

/// One message of the conversation as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    /// The reasoning of an answer; the tool's name for a tool result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// Whether thinking was on for this answer (user turns: asked for it).
    #[serde(default)]
    pub thinking: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TurnStats>,
}

impl Turn {
    pub fn user(content: impl Into<String>, thinking: bool) -> Self {
        Turn {
            role: "user".into(),
            content: content.into(),
            reasoning: String::new(),
            thinking,
            stats: None,
        }
    }

    /// A tool's result, sent back to the model as a `tool` message.
    pub fn tool(name: &str, content: String) -> Self {
        Turn {
            role: "tool".into(),
            content,
            reasoning: name.to_string(),
            thinking: false,
            stats: None,
        }
    }

    pub fn is_user(&self) -> bool {
        self.role == "user"
    }

    pub fn is_tool(&self) -> bool {
        self.role == "tool"
    }
}

/// A conversation and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub updated: u64,
    #[serde(default)]
    pub system: String,
    /// Sampling settings (the same table as the CLI's flags and the API's fields).
    #[serde(default)]
    pub sampling: SamplingParams,
    #[serde(default = "yes")]
    pub thinking: bool,
    /// The server's built-in tools (calculator, time, files) are offered and run.
    #[serde(default)]
    pub tools: bool,
    /// What the answers must be: free text, any JSON object, or JSON of a schema (held as
    /// they are decoded).
    #[serde(default)]
    pub format: AnswerFormat,
    #[serde(default)]
    pub turns: Vec<Turn>,
}

/// A conversation's answer format (the settings panel's switch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnswerFormat {
    #[default]
    Text,
    JsonObject,
    /// The schema as the user wrote it (checked to be JSON when saved).
    JsonSchema {
        schema: String,
    },
}

impl AnswerFormat {
    /// The panel's name for it.
    pub fn kind(&self) -> &'static str {
        match self {
            AnswerFormat::Text => "text",
            AnswerFormat::JsonObject => "json_object",
            AnswerFormat::JsonSchema { .. } => "json_schema",
        }
    }

    /// The grammar the answers are held to, if any.
    pub fn grammar(&self) -> Option<Grammar> {
        match self {
            AnswerFormat::Text => None,
            AnswerFormat::JsonObject => Some(Grammar::JsonObject),
            AnswerFormat::JsonSchema { schema } => {
                serde_json::from_str(schema).ok().map(Grammar::JsonSchema)
            }
        }
    }
}

fn yes() -> bool {
    true
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Conversation {
    /// A new, empty conversation with the server's default settings.
    pub fn new(sampling: SamplingParams) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!(
            "{:x}-{:x}",
            nanos,
            NEXT.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id())
        );
        Conversation {
            id,
            title: "New chat".into(),
            created: now(),
            updated: now(),
            system: String::new(),
            sampling,
            thinking: true,
            tools: false,
            format: AnswerFormat::Text,
            turns: Vec::new(),
        }
    }

    /// The messages the model is asked to continue: the system prompt and the turns, earlier
    /// answers without their reasoning (as the template drops it anyway).
    pub fn messages(&self) -> Vec<Message> {
        let mut messages = Vec::with_capacity(self.turns.len() + 1);
        if !self.system.trim().is_empty() {
            messages.push(Message::system(self.system.clone()));
        }
        for turn in &self.turns {
            messages.push(match turn.role.as_str() {
                "user" => Message::user(turn.content.clone()),
                "tool" => Message::tool(turn.content.clone()),
                _ => Message::assistant(turn.content.clone()),
            });
        }
        messages
    }

    /// The title from the first user message, once there is one.
    pub fn title_from_first_message(&mut self) {
        if self.title != "New chat" {
            return;
        }
        if let Some(first) = self.turns.iter().find(|t| t.is_user()) {
            let line = first.content.lines().next().unwrap_or("").trim();
            let mut title: String = line.chars().take(60).collect();
            if line.chars().count() > 60 {
                title.push('…');
            }
            if !title.is_empty() {
                self.title = title;
            }
        }
    }

    /// Whether the title or any message contains `query` (case-insensitive).
    pub fn matches(&self, query: &str) -> bool {
        let query = query.to_lowercase();
        self.title.to_lowercase().contains(&query)
            || self
                .turns
                .iter()
                .any(|t| t.content.to_lowercase().contains(&query))
    }
}

/// The conversation files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Uses (and creates) `<data_dir>/conversations`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("conversations");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Store { dir })
    }

    /// The default data directory: `$XDG_DATA_HOME/smollm3`, else `~/.local/share/smollm3`.
    pub fn default_dir() -> Option<PathBuf> {
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(xdg) => Some(PathBuf::from(xdg).join("smollm3")),
            None => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".local/share/smollm3")),
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn load(&self, id: &str) -> Result<Conversation, StoreError> {
        let path = self.path(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Writes the conversation atomically (temporary file, then rename).
    pub fn save(&self, conversation: &Conversation) -> Result<(), StoreError> {
        let path = self.path(&conversation.id)?;
        let json =
            serde_json::to_vec_pretty(conversation).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir).map_err(io(&self.dir))?;
        std::io::Write::write_all(&mut file, &json).map_err(io(&path))?;
        file.as_file().sync_all().map_err(io(&path))?;
        file.persist(&path).map_err(|e| io(&path)(e.error))?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every readable conversation, the most recently updated first (a corrupt file is
    /// skipped, not fatal: the others stay usable).
    pub fn list(&self) -> Result<Vec<Conversation>, StoreError> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(conversation) = self.load(id) {
                all.push(conversation);
            }
        }
        all.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Saves with `updated` set to now.
    pub fn touch_and_save(&self, conversation: &mut Conversation) -> Result<(), StoreError> {
        conversation.updated = now();
        self.save(conversation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_round_trip_and_ids_cannot_name_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut c = Conversation::new(SamplingParams::default());
        c.turns.push(Turn::user("Hello\nthere", true));
        c.title_from_first_message();
        store.save(&c).unwrap();
        assert_eq!(store.load(&c.id).unwrap(), c);
        assert_eq!(c.title, "Hello");
        assert_eq!(store.list().unwrap().len(), 1);
        for bad in ["../x", "a/b", "", "..", "x.json"] {
            assert!(
                matches!(store.load(bad), Err(StoreError::NotFound(_))),
                "{bad}"
            );
        }
        // A corrupt file is an error for itself, and skipped in the list.
        std::fs::write(dir.path().join("conversations/abc.json"), "{half").unwrap();
        assert!(matches!(store.load("abc"), Err(StoreError::Corrupt { .. })));
        assert_eq!(store.list().unwrap().len(), 1);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("conversations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".json")), "{names:?}");
        store.delete(&c.id).unwrap();
        assert!(matches!(store.load(&c.id), Err(StoreError::NotFound(_))));
    }
}
