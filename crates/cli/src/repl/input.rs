//! Where the chat's lines come from: rustyline (editing, persistent history, Ctrl+C handling)
//! on a terminal, plain stdin otherwise, so a script of turns and commands can be piped in.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result};

/// One line of input, or why there is none.
pub enum Line {
    Text(String),
    /// Ctrl+C at an empty prompt.
    Interrupted,
    Eof,
}

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
pub enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Plain(std::io::StdinLock<'static>),
}

/// Ctrl+C in the line editor: clear the line, or (empty line) interrupt.
struct CtrlC;

impl rustyline::ConditionalEventHandler for CtrlC {
    fn handle(
        &self,
        _evt: &rustyline::Event,
        _n: rustyline::RepeatCount,
        _positive: bool,
        ctx: &rustyline::EventContext,
    ) -> Option<rustyline::Cmd> {
        if ctx.line().is_empty() {
            Some(rustyline::Cmd::Interrupt)
        } else {
            Some(rustyline::Cmd::Kill(rustyline::Movement::WholeBuffer))
        }
    }
}

/// `$XDG_STATE_HOME/smollm3/history`, else `~/.local/state/smollm3/history`.
fn history_path() -> Option<PathBuf> {
    let non_empty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let state = non_empty("XDG_STATE_HOME")
        .or_else(|| non_empty("HOME").map(|h| h.join(".local/state")))?;
    Some(state.join("smollm3").join("history"))
}

impl Input {
    pub fn new(no_history: bool) -> Self {
        if !std::io::stdin().is_terminal() {
            return Input::Plain(std::io::stdin().lock());
        }
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(2000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.build())
            .unwrap_or_default();
        let mut editor = match rustyline::DefaultEditor::with_config(config) {
            Ok(e) => e,
            // A terminal rustyline cannot drive: read plainly.
            Err(_) => return Input::Plain(std::io::stdin().lock()),
        };
        editor.bind_sequence(
            rustyline::KeyEvent::ctrl('C'),
            rustyline::EventHandler::Conditional(Box::new(CtrlC)),
        );
        let history = if no_history { None } else { history_path() };
        if let Some(path) = &history {
            // A missing or unreadable history is not an error.
            let _ = editor.load_history(path);
        }
        Input::Editor {
            editor: Box::new(editor),
            history,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor { .. })
    }

    pub fn read(&mut self, prompt: &str) -> Result<Line> {
        match self {
            Input::Editor { editor, .. } => {
                if let Some(line) = typed_ahead_line() {
                    // The terminal echoed it amid the answer; show it where it belongs.
                    println!("{prompt}{line}");
                    return Ok(Line::Text(line));
                }
                match editor.readline(prompt) {
                    Ok(line) => Ok(Line::Text(line)),
                    Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                    Err(rustyline::error::ReadlineError::Eof) => Ok(Line::Eof),
                    Err(e) => Err(e).context("reading input"),
                }
            }
            Input::Plain(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line).context("reading stdin")? == 0 {
                    return Ok(Line::Eof);
                }
                let len = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(len);
                Ok(Line::Text(line))
            }
        }
    }

    /// Adds an entry to the history (and its file; failures to write it are ignored).
    pub fn remember(&mut self, entry: &str) {
        if let Input::Editor { editor, history } = self {
            if editor.add_history_entry(entry).unwrap_or(false) {
                if let Some(path) = history {
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = editor.append_history(path);
                }
            }
        }
    }
}

/// A complete line typed while an answer was being written, if one is waiting.
///
/// Lines typed then wait in the terminal's line buffer. rustyline would read them all at once
/// and keep only the first (kkawakam/rustyline#690), so they are taken here instead, while the
/// terminal is still in line mode, where one `read` returns at most one whole line. A line
/// still being typed is not readable yet and is left for rustyline to edit.
#[cfg(unix)]
fn typed_ahead_line() -> Option<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: tcgetattr fills a zeroed termios for an open descriptor.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut termios) } != 0 || termios.c_lflag & libc::ICANON == 0 {
        return None;
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout only looks.
    if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 || pfd.revents & libc::POLLIN == 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a local buffer of its own size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        // A Ctrl+D typed ahead on an empty line: rustyline reads the next one.
        return None;
    }
    let line = String::from_utf8_lossy(&buf[..n as usize]);
    Some(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(not(unix))]
fn typed_ahead_line() -> Option<String> {
    None
}
