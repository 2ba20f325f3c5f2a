//! The chat's slash commands (`/set`, `/show`, `/system`, `/save`, ...). `/set`, `/show` and
//! the parameter help read `smollm3_gen::SETTINGS`, the one table of sampling settings.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use smollm3_gen::{Backend, Completion, SamplingParams, SETTINGS};

use super::{Conversation, Repl};

const HELP: &str = "\
Available commands:
  /think                 think before answering
  /no_think              answer without thinking
  /system [TEXT]         set the system message (no TEXT: show it; /system clear: remove it)
  /set PARAM VALUE       set a sampling parameter (/set alone lists them)
  /set verbose|quiet     statistics after each answer, or not
  /set hidethinking|showthinking
  /show                  model, context used, settings, system message
  /stats                 statistics of the last turn
  /clear                 forget the conversation (the system message stays)
  /save FILE             save the conversation as OpenAI-style JSON messages
  /load FILE             load a conversation saved with /save
  /help, /?              this help
  /bye                   exit (also Ctrl+D, or Ctrl+C at an empty prompt)
Use \"\"\" to begin and end a multi-line message.
Ctrl+C while an answer is written stops it.";

/// The `/set` parameter list, from the settings table.
pub fn set_help() -> String {
    let mut help = String::from("Parameters for /set:");
    for s in SETTINGS {
        let value = match s.unset {
            Some(word) => format!("{} {}|{word}", s.name, s.value_name),
            None => format!("{} {}", s.name, s.value_name),
        };
        help.push_str(&format!("\n  {value:<23}{}", s.range));
    }
    help
}

impl<B: Backend> Repl<B> {
    /// Runs a slash command; returns whether to exit.
    pub(super) fn command(&mut self, line: &str) -> Result<bool> {
        let (name, rest) = match line.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim()),
            None => (line, ""),
        };
        let mut out = std::io::stdout().lock();
        match name {
            "/bye" | "/exit" | "/quit" => return Ok(true),
            "/help" | "/?" => writeln!(out, "{HELP}")?,
            "/think" => {
                self.thinking = true;
                writeln!(out, "Thinking on.")?;
            }
            "/no_think" | "/nothink" => {
                self.thinking = false;
                writeln!(out, "Thinking off.")?;
            }
            "/system" => self.system(rest)?,
            "/set" => self.set(rest)?,
            "/show" => self.show()?,
            "/stats" => match &self.last {
                Some(c) => writeln!(out, "{}", turn_stats(c))?,
                None => writeln!(out, "No answer yet.")?,
            },
            "/clear" => {
                self.conversation.messages.clear();
                self.session.reset()?;
                self.last = None;
                writeln!(out, "Cleared the conversation.")?;
            }
            "/save" => {
                if rest.is_empty() {
                    bail!("usage: /save FILE");
                }
                let n = self.conversation.save(Path::new(rest))?;
                writeln!(out, "Saved {n} messages to {rest}.")?;
            }
            "/load" => {
                if rest.is_empty() {
                    bail!("usage: /load FILE");
                }
                let loaded = Conversation::load(Path::new(rest))?;
                let n = loaded.to_messages().len();
                self.conversation = loaded;
                self.last = None;
                writeln!(out, "Loaded {n} messages from {rest}.")?;
            }
            _ => bail!("unknown command {name}; type /help for the list"),
        }
        Ok(false)
    }

    fn system(&mut self, text: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match text {
            "" => match &self.conversation.system {
                Some(s) => writeln!(out, "{s}")?,
                None => writeln!(out, "No system message.")?,
            },
            "clear" | "none" => {
                self.conversation.system = None;
                writeln!(out, "Removed the system message.")?;
            }
            _ => {
                self.conversation.system = Some(text.to_string());
                writeln!(out, "Set the system message.")?;
            }
        }
        Ok(())
    }

    fn set(&mut self, rest: &str) -> Result<()> {
        let (key, value) = match rest.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (rest, ""),
        };
        let mut out = std::io::stdout().lock();
        match key {
            "" => {
                writeln!(out, "{}", set_help())?;
                return Ok(());
            }
            "system" => return self.system(value),
            "think" => self.thinking = true,
            "nothink" | "no_think" => self.thinking = false,
            "verbose" => self.verbose = true,
            "quiet" => self.verbose = false,
            "hidethinking" => self.hide_thinking = true,
            "showthinking" | "nohidethinking" => self.hide_thinking = false,
            _ => {
                let Some(setting) = SamplingParams::setting(key) else {
                    bail!("unknown parameter {key:?} (/set alone lists them)");
                };
                if value.is_empty() {
                    bail!("usage: /set {key} VALUE (/set alone lists the parameters)");
                }
                let mut sampling = self.sampling.clone();
                setting
                    .set(&mut sampling, value)
                    .map_err(|e| anyhow::anyhow!("invalid value {value:?} for {key}: {e}"))?;
                sampling.validate()?;
                self.sampling = sampling;
                writeln!(out, "Set {} to {value}.", setting.name)?;
                return Ok(());
            }
        }
        writeln!(out, "Set {key}.")?;
        Ok(())
    }

    fn show(&self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let i = &self.info;
        let opt = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        writeln!(out, "model              {}", i.file)?;
        writeln!(
            out,
            "architecture       {}, {:.2} B parameters",
            i.architecture,
            i.parameters as f64 / 1e9
        )?;
        writeln!(
            out,
            "context            {} tokens used of {} (model maximum {})",
            self.session.cached_tokens().len(),
            self.session.context_size(),
            i.max_context
        )?;
        writeln!(
            out,
            "messages           {}",
            self.conversation.messages.len()
        )?;
        writeln!(
            out,
            "thinking           {}{}",
            if self.thinking { "on" } else { "off" },
            if self.hide_thinking { " (hidden)" } else { "" }
        )?;
        writeln!(
            out,
            "system             {}",
            opt(self.conversation.system.clone(), "(none)")
        )?;
        if let Some(tools) = &self.tools {
            let mut names: Vec<String> = tools
                .registry
                .definitions()
                .into_iter()
                .map(|d| d.name)
                .collect();
            names.extend(tools.external.iter().map(|d| format!("{} (yours)", d.name)));
            writeln!(out, "tools              {}", names.join(", "))?;
        }
        writeln!(out, "parameters")?;
        for setting in SETTINGS {
            writeln!(
                out,
                "  {:<19}{}",
                setting.name,
                setting.show(&self.sampling)
            )?;
        }
        if !self.stop.is_empty() {
            writeln!(out, "  stop               {:?}", self.stop)?;
        }
        Ok(())
    }
}

/// `/stats`: the last turn's figures.
fn turn_stats(c: &Completion) -> String {
    let s = &c.stats;
    format!(
        "prompt tokens      {}\nreused tokens      {} (from the cache)\nprocessed tokens   {}\n\
         generated tokens   {} ({} reasoning)\nfirst token after  {:.3} s\n\
         prefill            {:.1} tok/s\ndecode             {:.1} tok/s\nfinish             {}\n\
         seed               {}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefilled_tokens,
        s.generated_tokens,
        s.reasoning_tokens,
        s.time_to_first_token_ms / 1e3,
        s.prefill_tokens_per_second,
        s.decode_tokens_per_second,
        c.finish_reason.as_str(),
        s.seed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_help_lists_every_setting_with_its_range() {
        let help = set_help();
        for s in SETTINGS {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", s.name)))
                .unwrap_or_else(|| panic!("{} missing from:\n{help}", s.name));
            assert!(line.ends_with(s.range), "{line}");
        }
        assert!(help.contains("seed N|random"), "{help}");
    }
}
