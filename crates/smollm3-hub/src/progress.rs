//! A download progress bar for binaries (cargo feature `progress-bar`): it draws on stderr.
//!
//! The rest of the crate never prints; this module is the one place that does, for the
//! command-line front ends (`smollm3`, `cargo xtask fetch-weights`) to share.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::DownloadEvent;

/// A [`HubOptions::progress`](crate::HubOptions::progress) callback for binaries: draws on
/// stderr. When a download starts it prints one line naming the file and its size
/// (`downloading FILE (1.78 GiB)`), then, when stderr is a terminal, a bar with bytes, speed and
/// time left, cleared when the transfer ends. Cache hits print nothing.
pub fn terminal_download_progress() -> Box<dyn Fn(DownloadEvent<'_>) + Send + Sync> {
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Box::new(move |event| {
        let Ok(mut bar) = bar.lock() else { return };
        match event {
            DownloadEvent::Start { file, total } => {
                eprintln!("downloading {file} ({})", HumanBytes(total));
                let pb = if std::io::stderr().is_terminal() {
                    let style = ProgressStyle::with_template(
                        "[{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    ProgressBar::new(total).with_style(style)
                } else {
                    ProgressBar::hidden()
                };
                *bar = Some(pb);
            }
            DownloadEvent::Progress { downloaded, .. } => {
                if let Some(pb) = bar.as_ref() {
                    pb.set_position(downloaded);
                }
            }
            DownloadEvent::Finish => {
                if let Some(pb) = bar.take() {
                    pb.finish_and_clear();
                }
            }
        }
    })
}
