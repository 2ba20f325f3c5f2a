use std::path::{Path, PathBuf};
use std::sync::Arc;

use smollm3_chat::{ChatTemplate, Tokenizer};
use smollm3_model::{FileIdentity, GgufFile, LoadOptions, Model};

use crate::{Batcher, ModelBackend, Result, Session, SharedGrammars};

/// Everything one GGUF file provides: the model, its tokenizer and its chat template (the
/// official SmolLM3 template when the file has none). Cheap to clone; share it between
/// sessions.
#[derive(Clone)]
pub struct Engine {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    path: PathBuf,
    file: FileIdentity,
    /// Built on the first constrained request of any of its sessions.
    grammars: SharedGrammars,
}

impl Engine {
    /// Loads a GGUF file (its header is parsed once for all three parts).
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Self::from_gguf(&GgufFile::open(path.as_ref())?, options)
    }

    /// Builds everything from an already-open GGUF file.
    pub fn from_gguf(gguf: &GgufFile, options: &LoadOptions) -> Result<Self> {
        let path = gguf.path();
        let model = Model::from_gguf(gguf, options)?;
        let tokenizer = Tokenizer::from_gguf_content(gguf.content())?;
        let template = ChatTemplate::from_gguf_content(gguf.content())?;
        Ok(Engine {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            path: path.to_path_buf(),
            file: gguf.identity().clone(),
            grammars: SharedGrammars::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF file as it was loaded: the weights are read from its mapping, so a server
    /// asks [`FileIdentity::changed_in_place`] before each request.
    pub fn file(&self) -> &FileIdentity {
        &self.file
    }

    /// `count` conversations whose forward passes run together when they ask at the same
    /// time ([`Batcher`]): a server's slots. Each cache holds up to `context` tokens.
    pub fn batched_sessions(
        &self,
        count: usize,
        context: usize,
    ) -> Result<(Arc<Batcher>, Vec<Session>)> {
        let batcher = Batcher::new(self.model.clone());
        let sessions = (0..count)
            .map(|_| {
                Ok(Session::with_backend(
                    ModelBackend::batched(&batcher, context)?,
                    self.tokenizer.clone(),
                    self.template.clone(),
                )
                .with_grammars(self.grammars.clone()))
            })
            .collect::<Result<_>>()?;
        Ok((batcher, sessions))
    }

    /// A new conversation whose cache holds up to `context` tokens.
    pub fn session(&self, context: usize) -> Result<Session> {
        Ok(Session::new(
            self.model.clone(),
            self.tokenizer.clone(),
            self.template.clone(),
            context,
        )?
        .with_grammars(self.grammars.clone()))
    }

    /// The constraint engine its sessions share, for sessions made elsewhere (a server's).
    pub fn grammars(&self) -> SharedGrammars {
        self.grammars.clone()
    }
}
