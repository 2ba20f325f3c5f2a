//! Hostile model files, as issue 16 tried them by hand: one field of a valid GGUF changed at a
//! time (each count, length, type, dimension and offset of the header set to an absurd value,
//! plus cuts), each given to `smollm3 info` and `smollm3 run` with `RUST_BACKTRACE=1`. Every
//! run must end cleanly: exit 0, or exit 1 with exactly one `error:` line on stderr; never a
//! panic, a backtrace, an abort (an allocation sized by a count in the file) or a signal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where each field of a GGUF header lies, found by walking it (GGUF v3, little-endian).
#[derive(Default)]
struct Layout {
    /// (name, offset, width in bytes) of every fixed-size field worth changing.
    fields: Vec<(String, usize, usize)>,
    /// Offset where the tensor data starts (after the header's padding).
    data_start: usize,
}

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
    layout: Layout,
}

impl Walker<'_> {
    fn take(&mut self, name: Option<String>, width: usize) -> u64 {
        let mut value = [0u8; 8];
        value[..width].copy_from_slice(&self.bytes[self.at..self.at + width]);
        if let Some(name) = name {
            self.layout.fields.push((name, self.at, width));
        }
        self.at += width;
        u64::from_le_bytes(value)
    }

    fn string(&mut self, name: Option<String>) -> String {
        let len = self.take(name, 8) as usize;
        let text = String::from_utf8_lossy(&self.bytes[self.at..self.at + len]).into_owned();
        self.at += len;
        text
    }

    /// Skips a value of `kind`, recording its length and element type when `key` is given.
    fn value(&mut self, kind: u32, key: Option<&str>) {
        match kind {
            0 | 1 | 7 => self.at += 1,
            2 | 3 => self.at += 2,
            4..=6 => {
                if let Some(key) = key {
                    self.layout
                        .fields
                        .push((format!("{key} value"), self.at, 4));
                }
                self.at += 4
            }
            10..=12 => self.at += 8,
            8 => {
                self.string(key.map(|k| format!("{k} string length")));
            }
            9 => {
                let element = self.take(key.map(|k| format!("{k} array type")), 4) as u32;
                let len = self.take(key.map(|k| format!("{k} array length")), 8);
                for _ in 0..len {
                    self.value(element, None);
                }
            }
            other => panic!("the fixture has a value of type {other}"),
        }
    }
}

fn layout(bytes: &[u8]) -> Layout {
    let mut w = Walker {
        bytes,
        at: 0,
        layout: Layout::default(),
    };
    w.take(Some("magic".into()), 4);
    w.take(Some("version".into()), 4);
    let tensors = w.take(Some("tensor count".into()), 8);
    let kvs = w.take(Some("metadata count".into()), 8);
    let mut alignment = 32;
    for i in 0..kvs {
        let key = w.string((i == 0).then(|| "first key length".to_string()));
        let kind = w.take((i == 0).then(|| "first value type".to_string()), 4) as u32;
        if key == "general.alignment" {
            let width = if kind == 10 { 8 } else { 4 };
            let mut value = [0u8; 8];
            value[..width].copy_from_slice(&bytes[w.at..w.at + width]);
            alignment = u64::from_le_bytes(value) as usize;
        }
        w.value(kind, Some(&key));
    }
    for i in 0..tensors {
        // The first tensor, one in the middle and the last.
        let mark = i == 0 || i == tensors / 2 || i == tensors - 1;
        let name = |field: &str| mark.then(|| format!("tensor {i} {field}"));
        w.string(name("name length"));
        let dims = w.take(name("dimension count"), 4);
        for d in 0..dims {
            w.take(name(&format!("dimension {d}")), 8);
        }
        w.take(name("type"), 4);
        w.take(name("offset"), 8);
    }
    w.layout.data_start = w.at.div_ceil(alignment) * alignment;
    w.layout
}

/// The hostile variants: (what was changed, the file's bytes).
fn variants(valid: &[u8]) -> Vec<(String, Vec<u8>)> {
    let layout = layout(valid);
    let mut out = Vec::new();
    for (name, at, width) in &layout.fields {
        let absurd: &[u64] = match name.as_str() {
            "magic" => &[u32::from_le_bytes(*b"GGUX") as u64],
            "version" => &[0, 99],
            n if n.ends_with("type") => &[99],
            // Counts, lengths, dimensions, offsets and the numbers of the config: none, more
            // than the file holds, and the most the field can say.
            _ if *width == 4 => &[0, 1 << 29, u32::MAX as u64],
            _ => &[0, 1 << 40, u64::MAX],
        };
        for &value in absurd {
            let mut bytes = valid.to_vec();
            bytes[*at..at + width].copy_from_slice(&value.to_le_bytes()[..*width]);
            out.push((format!("{name} = {value}"), bytes));
        }
    }
    for (name, at, width) in &layout.fields {
        // Off by one: the next field is read from the wrong place.
        if name.ends_with("length") || name.ends_with("count") {
            let mut bytes = valid.to_vec();
            let mut value = [0u8; 8];
            value[..*width].copy_from_slice(&bytes[*at..at + width]);
            let value = u64::from_le_bytes(value) + 1;
            bytes[*at..at + width].copy_from_slice(&value.to_le_bytes()[..*width]);
            out.push((format!("{name} one more"), bytes));
        }
    }
    for (what, len) in [
        ("cut in the header", layout.data_start / 2),
        ("cut at the end of the header", layout.data_start),
        (
            "cut in the tensor data",
            (layout.data_start + valid.len()) / 2,
        ),
        ("cut one byte short", valid.len() - 1),
    ] {
        out.push((what.to_string(), valid[..len].to_vec()));
    }
    out
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf")
}

#[test]
fn every_hostile_variant_of_a_valid_file_ends_cleanly_in_info_and_run() {
    let valid = std::fs::read(fixture()).expect("run `cargo xtask gen-fixtures` first");
    let variants = variants(&valid);
    // Every kind of field is there: the walk found the header.
    assert!(variants.len() > 100, "{} variants", variants.len());
    let dir = std::env::temp_dir().join(format!("smollm3-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hostile.gguf");
    let path_text = path.to_str().unwrap();
    let (mut refused, mut runs) = (0, 0);
    let mut bad = Vec::new();
    for (what, bytes) in &variants {
        std::fs::write(&path, bytes).unwrap();
        for args in [
            vec!["info", "--model", path_text],
            vec!["run", "--model", path_text, "-n", "1", "hi"],
        ] {
            runs += 1;
            let out = Command::new(env!("CARGO_BIN_EXE_smollm3"))
                .args(&args)
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let clean = match out.status.code() {
                Some(0) => !stderr.contains("panicked"),
                Some(1) => {
                    refused += 1;
                    stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1
                }
                _ => false,
            };
            if !clean {
                bad.push(format!("{what}: {} -> {:?}\n{stderr}", args[0], out.status));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{} variants, {runs} runs, {refused} refused",
        variants.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {runs} runs:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Most of them are refused (a few changes, e.g. to an unused count, are harmless).
    assert!(refused > runs / 2, "{refused} of {runs} refused");
}
