//! The one header value candle's GGUF reader uses without checking: `general.alignment`, which
//! it divides by after reading the tensor index (`Content::read`), so a file that says 0 made
//! every command panic ("attempt to divide by zero", found by `crates/cli/tests/hostile_gguf.rs`).
//! This walks the metadata before candle does, without allocating, and finds that value.
//!
//! The walk is lenient: anything it cannot follow (a length past the end, an unknown type, a
//! version it does not know) ends it with "not found", and candle's reader, which checks all
//! of that, then reports the problem in its own words.

/// Arrays of arrays deeper than this are not followed (candle reads any depth).
const MAX_DEPTH: usize = 8;

/// The `general.alignment` candle would use, if the header sets it to an integer type candle
/// reads it from (`u8`, `u16`, `u32`, or a non-negative `i8`, `i16`, `i32`; otherwise candle
/// takes 32, and so is this `None`).
pub(crate) fn header_alignment(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader {
        bytes,
        at: 0,
        wide: true,
    };
    r.take(4)?; // magic, checked by the caller
    let wide = match r.u32()? {
        1 => false,
        2 | 3 => true,
        _ => return None,
    };
    r.wide = wide;
    r.len()?; // tensors
    let entries = r.len()?;
    for _ in 0..entries {
        let key_len = r.len()?;
        let key = r.take(key_len)?;
        let kind = r.u32()?;
        if key == b"general.alignment" {
            return match kind {
                0 => Some(r.take(1)?[0].into()),
                1 => u64::try_from(r.take(1)?[0] as i8).ok(),
                2 => Some(u16::from_le_bytes(r.array()?).into()),
                3 => u64::try_from(i16::from_le_bytes(r.array()?)).ok(),
                4 => Some(u32::from_le_bytes(r.array()?).into()),
                5 => u64::try_from(i32::from_le_bytes(r.array()?)).ok(),
                _ => None,
            };
        }
        r.skip_value(kind, 0)?;
    }
    None
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// GGUF v2 and v3 write lengths and counts as `u64`, v1 as `u32`.
    wide: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N as u64)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Option<u64> {
        if self.wide {
            Some(u64::from_le_bytes(self.array()?))
        } else {
            self.u32().map(u64::from)
        }
    }

    /// Steps over one value of GGUF type `kind`. Every step consumes bytes, so a count in the
    /// file cannot make it loop longer than the file is long.
    fn skip_value(&mut self, kind: u32, depth: usize) -> Option<()> {
        let fixed = |kind: u32| match kind {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match kind {
            8 => {
                let len = self.len()?;
                self.take(len)?;
            }
            9 if depth < MAX_DEPTH => {
                let element = self.u32()?;
                let count = self.len()?;
                match fixed(element) {
                    Some(size) => {
                        self.take(count.checked_mul(size)?)?;
                    }
                    None => {
                        for _ in 0..count {
                            self.skip_value(element, depth + 1)?;
                        }
                    }
                }
            }
            other => {
                self.take(fixed(other)?)?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::header_alignment;

    /// A GGUF v3 header: no tensors, the given metadata entries (key, type, value bytes).
    fn header(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (key, kind, value) in entries {
            bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
            bytes.extend_from_slice(key.as_bytes());
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(value);
        }
        bytes
    }

    fn string(text: &str) -> Vec<u8> {
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes
    }

    #[test]
    fn the_alignment_is_found_after_strings_and_arrays_of_every_kind() {
        let mut strings = 8u32.to_le_bytes().to_vec();
        strings.extend_from_slice(&2u64.to_le_bytes());
        strings.extend(string("a"));
        strings.extend(string("bc"));
        let mut floats = 6u32.to_le_bytes().to_vec();
        floats.extend_from_slice(&3u64.to_le_bytes());
        floats.extend_from_slice(&[0; 12]);
        let bytes = header(&[
            ("general.architecture", 8, string("smollm3")),
            ("tokenizer.ggml.tokens", 9, strings),
            ("tokenizer.ggml.scores", 9, floats),
            ("x.flag", 7, vec![1]),
            ("x.big", 10, vec![0; 8]),
            ("general.alignment", 4, 64u32.to_le_bytes().to_vec()),
        ]);
        assert_eq!(header_alignment(&bytes), Some(64));
        let zero = header(&[("general.alignment", 2, 0u16.to_le_bytes().to_vec())]);
        assert_eq!(header_alignment(&zero), Some(0));
        // Types candle does not read it from (it then uses 32): not reported.
        let negative = header(&[("general.alignment", 5, (-8i32).to_le_bytes().to_vec())]);
        assert_eq!(header_alignment(&negative), None);
        let wide = header(&[("general.alignment", 10, 0u64.to_le_bytes().to_vec())]);
        assert_eq!(header_alignment(&wide), None);
    }

    #[test]
    fn a_walk_it_cannot_follow_ends_without_an_answer() {
        let mut huge = 8u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes()); // 2^64 strings
        let bytes = header(&[
            ("a", 9, huge),
            ("general.alignment", 4, 0u32.to_le_bytes().to_vec()),
        ]);
        assert_eq!(header_alignment(&bytes), None);
        let cut = header(&[("general.alignment", 4, 0u32.to_le_bytes().to_vec())]);
        assert_eq!(header_alignment(&cut[..cut.len() - 1]), None);
        assert_eq!(header_alignment(b"GGUF"), None);
        let mut unknown = header(&[("x", 99, vec![])]);
        unknown.extend(header(&[])); // whatever follows
        assert_eq!(header_alignment(&unknown), None);
    }
}
