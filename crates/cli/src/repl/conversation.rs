//! The chat's conversation and its file form (`/save`, `/load`, `--load`): OpenAI-style JSON
//! messages, read and checked by `smollm3_chat::Message`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use smollm3_chat::{ChatRequest, Message, Role};

/// A conversation: the system message apart (`/system` changes it), then the other messages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub messages: Vec<Message>,
}

impl Conversation {
    /// Reads and checks a conversation saved with `/save`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// The messages of an OpenAI-style JSON array; a system message may only come first.
    pub fn parse(text: &str) -> Result<Self> {
        let mut conversation = Conversation::default();
        for (i, message) in Message::list_from_json(text)?.into_iter().enumerate() {
            if message.role != Role::System {
                conversation.messages.push(message);
            } else if i == 0 {
                conversation.system = Some(message.text().into_owned());
            } else {
                bail!("messages[{i}]: a system message may only come first");
            }
        }
        Ok(conversation)
    }

    /// Writes the conversation as pretty JSON; returns how many messages it holds.
    pub fn save(&self, path: &Path) -> Result<usize> {
        let messages = self.to_messages();
        let json = serde_json::to_string_pretty(&messages)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        Ok(messages.len())
    }

    /// Every message, the system message first.
    pub fn to_messages(&self) -> Vec<Message> {
        self.system
            .iter()
            .map(Message::system)
            .chain(self.messages.iter().cloned())
            .collect()
    }

    /// The prompt for the next answer.
    pub fn chat_request(&self, thinking: bool) -> ChatRequest {
        ChatRequest {
            messages: self.to_messages(),
            add_generation_prompt: true,
            enable_thinking: Some(thinking),
            ..Default::default()
        }
    }

    /// The last message is the user's (no answer follows it yet).
    pub fn ends_with_user(&self) -> bool {
        self.messages.last().is_some_and(|m| m.role == Role::User)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_are_checked() {
        let c = Conversation::parse(
            r#"[{"role":"system","content":"S"},{"role":"user","content":"Hi"},
                {"role":"assistant","content":"Hello"}]"#,
        )
        .unwrap();
        assert_eq!(c.system.as_deref(), Some("S"));
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.to_messages().len(), 3);
        for (bad, why) in [
            ("{}", "array"),
            ("[1]", "expected a message object"),
            (r#"[{"content":"x"}]"#, "role"),
            (r#"[{"role":"bot","content":"x"}]"#, "unknown role"),
            (r#"[{"role":"user"}]"#, "content"),
            (
                r#"[{"role":"user","content":"x"},{"role":"system","content":"S"}]"#,
                "first",
            ),
            ("not json", "JSON"),
        ] {
            let e = format!("{:#}", Conversation::parse(bad).unwrap_err());
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
