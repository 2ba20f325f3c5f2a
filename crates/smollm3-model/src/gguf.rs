//! Reading a GGUF file: header and metadata up front, tensors on demand, every failure mapped to
//! a [`ModelError`] that names the file and the problem.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{ModelError, Result};

/// An open GGUF file: parsed header plus a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
    file_len: u64,
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
        let file_len = file.metadata().map_err(open_err)?.len();
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
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let content = Content::read(&mut reader).map_err(|e| ModelError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("header: {e}"),
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
            reader,
            file_len,
        })
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

    /// Reads a tensor after checking its shape and that its bytes lie inside the file.
    pub fn load_tensor(&mut self, name: &str, expected: &[usize]) -> Result<QTensor> {
        let (dtype, shape) = self.tensor_info(name)?;
        if shape != expected {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: shape,
            });
        }
        let info = &self.content.tensor_infos[name];
        let elems: usize = shape.iter().product();
        let bytes = (elems / dtype.block_size()) as u64 * dtype.type_size() as u64;
        let start = self.content.tensor_data_offset.saturating_add(info.offset);
        if start.saturating_add(bytes) > self.file_len {
            return Err(ModelError::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "tensor {name:?} needs bytes {start}..{} but the file ends at {}",
                    start.saturating_add(bytes),
                    self.file_len
                ),
            });
        }
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| ModelError::Corrupt {
                path: self.path.clone(),
                detail: format!("tensor {name:?}: {e}"),
            })
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
