//! Reading a GGUF file: header and metadata up front, tensors on demand, every failure mapped to
//! a [`ModelError`] that names the file and the problem.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use memmap2::Mmap;

use crate::error::{candle_message, ModelError, Result};

/// An open GGUF file: parsed header plus the whole file memory-mapped.
///
/// Weights are used in place from the mapping, so loading copies nothing and the pages are
/// shared with the OS page cache (and with other processes running the same model). As with
/// llama.cpp's default mmap loading, the file must not be modified while a model uses it.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    mmap: Arc<Mmap>,
    file_len: u64,
    identity: FileIdentity,
}

/// What a file was when it was opened, to tell later whether the bytes behind its mapping
/// changed: a server keeps a model mapped for days, and a file overwritten in place (`cp`
/// over it, a download into the same path) would give garbage weights, or kill the process
/// with SIGBUS where it was truncated. Replacing the file by a rename (what downloaders do)
/// or deleting it leaves the mapped bytes as they were, so that is not a change.
#[derive(Debug, Clone)]
pub struct FileIdentity {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Device and inode: the same file, not another one at the same path.
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileIdentity {
    fn of(path: &Path, metadata: &std::fs::Metadata) -> Self {
        FileIdentity {
            path: path.to_path_buf(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the file was changed in place since it was opened (one line), or `None` while it
    /// is as it was, or when the path now names another file or none (the opened one, still
    /// mapped, is intact). One `stat`: cheap enough to ask before every request.
    pub fn changed_in_place(&self) -> Option<String> {
        let now = std::fs::metadata(&self.path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if (now.dev(), now.ino()) != self.inode {
                return None;
            }
        }
        let path = self.path.display();
        if now.len() < self.len {
            return Some(format!(
                "{path} was truncated from {} to {} bytes while in use",
                self.len,
                now.len()
            ));
        }
        if now.len() != self.len || now.modified().ok() != self.modified {
            return Some(format!("{path} was overwritten while in use"));
        }
        None
    }
}

/// The bytes of one tensor inside a memory-mapped GGUF file.
#[derive(Clone)]
pub(crate) struct TensorBytes {
    mmap: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl TensorBytes {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.mmap[self.start..self.start + self.len]
    }
}

/// Parameter count and storage types of a file's tensors.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightSummary {
    pub parameters: u64,
    /// `(ggml type name, tensor count)`, most frequent first.
    pub tensor_types: Vec<(String, usize)>,
    pub file_bytes: u64,
}

/// A metadata value in a form that does not tie callers to candle's GGUF types.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum MetadataValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// Arrays are summarised (tokenizer vocabularies have 100k+ entries).
    Array {
        len: usize,
    },
}

impl GgufFile {
    /// Opens `path`, checks the magic bytes and parses the header.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        let metadata = file.metadata().map_err(open_err)?;
        let file_len = metadata.len();
        let identity = FileIdentity::of(path, &metadata);
        let mut magic = [0u8; 4];
        if let Err(e) = file.read_exact(&mut magic) {
            return Err(ModelError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("file is {file_len} bytes, too short for a GGUF header ({e})"),
            });
        }
        if &magic != b"GGUF" {
            return Err(ModelError::NotGguf {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        // SAFETY: the mapping is read-only; like llama.cpp we rely on the file not being
        // truncated while mapped (documented on `GgufFile`).
        let mmap = unsafe { Mmap::map(&file) }.map_err(open_err)?;
        if let Some(alignment) = crate::gguf_alignment::header_alignment(&mmap) {
            if !alignment.is_power_of_two() {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!(
                        "header: general.alignment is {alignment}; it must be a power of two"
                    ),
                });
            }
        }
        let content =
            Content::read(&mut Cursor::new(&mmap[..])).map_err(|e| ModelError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("header: {}", candle_message(&e)),
            })?;
        if content.tensor_data_offset > file_len {
            return Err(ModelError::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "tensor data would start at byte {} but the file has {file_len} bytes",
                    content.tensor_data_offset
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            mmap: Arc::new(mmap),
            file_len,
            identity,
        })
    }

    /// The file as it was opened, to notice later that it was changed under the mapping.
    pub fn identity(&self) -> &FileIdentity {
        &self.identity
    }

    /// The parsed header (metadata and tensor index), e.g. to build a tokenizer from it
    /// without reading the file again.
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// All metadata keys with their values (arrays summarised), sorted by key.
    pub fn metadata(&self) -> Vec<(String, MetadataValue)> {
        let mut out: Vec<_> = self
            .content
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), MetadataValue::from(v)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Length of an array-valued key (e.g. `tokenizer.ggml.tokens`).
    pub fn array_len(&self, key: &str) -> Option<usize> {
        match self.get(key) {
            Some(Value::Array(a)) => Some(a.len()),
            _ => None,
        }
    }

    /// Element `index` of a string-array key, if it exists and is a string.
    pub fn string_array_item(&self, key: &str, index: usize) -> Option<&str> {
        match self.get(key) {
            Some(Value::Array(a)) => match a.get(index) {
                Some(Value::String(s)) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The raw candle metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_string(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(invalid(key, format!("expected a string, found {other:?}"))),
        }
    }

    pub fn require_string(&self, key: &str) -> Result<&str> {
        self.get_string(key)?.ok_or_else(|| missing(key))
    }

    /// An unsigned integer of any GGUF integer type.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => {
                return Err(invalid(
                    key,
                    format!("expected an integer, found {other:?}"),
                ))
            }
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| invalid(key, format!("{n} is not a valid non-negative size")))
    }

    pub fn require_usize(&self, key: &str) -> Result<usize> {
        self.get_usize(key)?.ok_or_else(|| missing(key))
    }

    /// A float of either GGUF float type (integers are accepted too).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::F32(x) => f64::from(*x),
            Value::F64(x) => *x,
            _ => match self.get_usize(key) {
                Ok(Some(n)) => n as f64,
                _ => return Err(invalid(key, format!("expected a number, found {v:?}"))),
            },
        };
        if !x.is_finite() {
            return Err(invalid(key, format!("{x} is not a finite number")));
        }
        Ok(Some(x))
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(key, format!("expected a bool, found {other:?}"))),
        }
    }

    /// Name, type and shape (row-major: `[rows, cols]` for a matrix) of every tensor, in name
    /// order.
    pub fn tensor_infos(&self) -> Vec<(String, GgmlDType, Vec<usize>)> {
        let mut out: Vec<_> = self
            .content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.clone(), info.ggml_dtype, info.shape.dims().to_vec()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Parameters and tensor types over every tensor in the file (reads no tensor data).
    pub fn weight_summary(&self) -> WeightSummary {
        let mut types = std::collections::BTreeMap::<String, usize>::new();
        let mut parameters = 0u64;
        for (_, dtype, shape) in self.tensor_infos() {
            *types.entry(format!("{dtype:?}")).or_default() += 1;
            // A hostile file's dimensions can overflow any integer: the count saturates (its
            // data is checked against the file's size elsewhere, `check_tensor_data`).
            let elements = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            parameters = parameters.saturating_add(elements);
        }
        let mut tensor_types: Vec<_> = types.into_iter().collect();
        tensor_types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        WeightSummary {
            parameters,
            tensor_types,
            file_bytes: self.file_len,
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Type and shape of a tensor, or `MissingTensor`.
    pub fn tensor_info(&self, name: &str) -> Result<(GgmlDType, Vec<usize>)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| (info.ggml_dtype, info.shape.dims().to_vec()))
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// Locates a tensor's bytes after checking its shape, that they lie inside the file and
    /// that they are aligned for the block type.
    pub(crate) fn tensor_bytes(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<(GgmlDType, TensorBytes)> {
        let (dtype, shape) = self.tensor_info(name)?;
        if shape != expected {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: shape,
            });
        }
        let (start, len) = self.tensor_range(name, dtype, &shape)?;
        Ok((
            dtype,
            TensorBytes {
                mmap: self.mmap.clone(),
                start: start as usize,
                len: len as usize,
            },
        ))
    }

    /// Checks that every tensor's bytes lie inside the file, whole blocks and aligned: what
    /// loading the model checks tensor by tensor, for a whole file at once (`smollm3 info`
    /// on a truncated download). Reads no tensor data.
    pub fn check_tensor_data(&self) -> Result<()> {
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort_by_key(|n| self.content.tensor_infos[*n].offset);
        for name in names {
            let (dtype, shape) = self.tensor_info(name)?;
            self.tensor_range(name, dtype, &shape)?;
        }
        Ok(())
    }

    /// Where tensor `name` of `dtype` and `shape` lies in the file: (start, length), checked
    /// against the file's length and the block type (no arithmetic on the file's numbers
    /// can overflow).
    fn tensor_range(&self, name: &str, dtype: GgmlDType, shape: &[usize]) -> Result<(u64, u64)> {
        let corrupt = |detail: String| ModelError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let elems = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor {name:?} has shape {shape:?}: too many elements"
                ))
            })?;
        let block = dtype.block_size() as u64;
        if !elems.is_multiple_of(block) {
            return Err(corrupt(format!(
                "tensor {name:?} has {elems} elements, not a whole number of {dtype:?} blocks"
            )));
        }
        let len = (elems / block).saturating_mul(dtype.type_size() as u64);
        let start = self
            .content
            .tensor_data_offset
            .saturating_add(self.content.tensor_infos[name].offset);
        let end = start.saturating_add(len);
        if end > self.file_len {
            return Err(corrupt(format!(
                "tensor {name:?} needs bytes {start}..{end} but the file ends at {}",
                self.file_len
            )));
        }
        // Every block type starts with an f16 or f32 field; GGUF aligns tensors to 32 bytes.
        let align = if dtype == GgmlDType::F32 { 4 } else { 2 };
        if !start.is_multiple_of(align) {
            return Err(corrupt(format!(
                "tensor {name:?} starts at byte {start}, not aligned to {align} bytes"
            )));
        }
        Ok((start, len))
    }
}

impl From<&Value> for MetadataValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::U8(x) => Self::Int((*x).into()),
            Value::I8(x) => Self::Int((*x).into()),
            Value::U16(x) => Self::Int((*x).into()),
            Value::I16(x) => Self::Int((*x).into()),
            Value::U32(x) => Self::Int((*x).into()),
            Value::I32(x) => Self::Int((*x).into()),
            Value::U64(x) => Self::Int(i64::try_from(*x).unwrap_or(i64::MAX)),
            Value::I64(x) => Self::Int(*x),
            Value::F32(x) => Self::Float((*x).into()),
            Value::F64(x) => Self::Float(*x),
            Value::Bool(b) => Self::Bool(*b),
            Value::String(s) => Self::String(s.clone()),
            Value::Array(a) => Self::Array { len: a.len() },
        }
    }
}

pub(crate) fn missing(key: &str) -> ModelError {
    ModelError::MissingMetadata {
        key: key.to_string(),
    }
}

pub(crate) fn invalid(key: &str, reason: String) -> ModelError {
    ModelError::InvalidMetadata {
        key: key.to_string(),
        reason,
    }
}
