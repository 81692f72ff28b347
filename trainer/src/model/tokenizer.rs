//! Tokenization the way TRL does it: `tokenizer.json` through the `tokenizers` crate, special
//! tokens and BOS/EOS policy from `tokenizer_config.json`, and the chat template rendered with
//! minijinja (Python string methods via `minijinja-contrib`'s pycompat).
//!
//! Conventions (they match the parity fixture and TRL's DPO/reward collators):
//! prompt ids = `encode(prompt, add_special_tokens = true)` (BOS from the post-processor, or
//! prepended when `add_bos_token` asks for it and the post-processor did not), completion ids =
//! `encode(completion, add_special_tokens = false) + [eos]`.

use std::path::Path;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::TrainerError;

/// One chat turn, as in the messages data format and chat templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// ChatML, used when a tokenizer has no chat template of its own (documented in the README).
pub const DEFAULT_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfigFile {
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
    pad_token: Option<SpecialToken>,
    add_bos_token: Option<bool>,
    chat_template: Option<ChatTemplateField>,
}

/// Special tokens are written either as a string or as an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            SpecialToken::Text(s) => s,
            SpecialToken::Added { content } => content,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChatTemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

pub struct ChatTokenizer {
    pub inner: Tokenizer,
    pub bos: Option<(String, u32)>,
    pub eos: (String, u32),
    pub pad_id: u32,
    add_bos: bool,
    chat_template: String,
}

impl ChatTokenizer {
    /// Reads `tokenizer.json` and (optionally) `tokenizer_config.json` from a model folder.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(TrainerError::MissingFile { path, what: "the model folder needs tokenizer.json" }.into());
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path)?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?
        } else {
            TokenizerConfigFile::default()
        };
        Self::new(inner, config)
    }

    /// Builds from an in-memory tokenizer plus the special tokens (used for GGUF files).
    pub fn from_parts(
        inner: Tokenizer,
        bos: Option<&str>,
        eos: &str,
        pad: Option<&str>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> anyhow::Result<Self> {
        let config = TokenizerConfigFile {
            bos_token: bos.map(|s| SpecialToken::Text(s.into())),
            eos_token: Some(SpecialToken::Text(eos.into())),
            pad_token: pad.map(|s| SpecialToken::Text(s.into())),
            add_bos_token: Some(add_bos),
            chat_template: chat_template.map(ChatTemplateField::One),
        };
        Self::new(inner, config)
    }

    fn new(inner: Tokenizer, config: TokenizerConfigFile) -> anyhow::Result<Self> {
        let id_of = |token: &SpecialToken| -> anyhow::Result<(String, u32)> {
            let text = token.content().to_string();
            let id =
                inner.token_to_id(&text).ok_or_else(|| anyhow!("special token {text:?} is not in the vocabulary"))?;
            Ok((text, id))
        };
        let bos = config.bos_token.as_ref().map(id_of).transpose()?;
        let eos = config
            .eos_token
            .as_ref()
            .map(id_of)
            .transpose()?
            .ok_or_else(|| anyhow!("tokenizer_config.json has no eos_token"))?;
        // TRL falls back to EOS for padding; padding is never attended to or scored here.
        let pad_id = match &config.pad_token {
            Some(p) => id_of(p)?.1,
            None => eos.1,
        };
        let chat_template = match config.chat_template {
            Some(ChatTemplateField::One(t)) => t,
            Some(ChatTemplateField::Named(list)) => list
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template)
                .ok_or_else(|| anyhow!("tokenizer_config.json has no \"default\" chat template"))?,
            None => DEFAULT_CHAT_TEMPLATE.to_string(),
        };
        Ok(ChatTokenizer { inner, bos, eos, pad_id, add_bos: config.add_bos_token.unwrap_or(false), chat_template })
    }

    fn encode(&self, text: &str, special: bool) -> anyhow::Result<Vec<u32>> {
        Ok(self.inner.encode(text, special).map_err(|e| anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
    }

    /// Prompt ids with exactly one leading BOS when the tokenizer uses one.
    pub fn encode_prompt(&self, prompt: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = self.encode(prompt, true)?;
        if let Some((_, bos)) = self.bos {
            if self.add_bos && ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
            // A chat template that writes the BOS text plus a post-processor that adds one.
            while ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                ids.remove(0);
            }
        }
        Ok(ids)
    }

    /// The `tokenizer_config.json` that reproduces this tokenizer's special tokens, BOS policy
    /// and chat template (for model folders written from a GGUF source).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "bos_token": self.bos.as_ref().map(|b| b.0.clone()),
            "eos_token": self.eos.0,
            "pad_token": self.inner.id_to_token(self.pad_id),
            "add_bos_token": self.add_bos,
            "chat_template": self.chat_template,
            "tokenizer_class": "PreTrainedTokenizerFast",
        })
    }

    /// Completion ids followed by EOS.
    pub fn encode_completion(&self, completion: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = self.encode(completion, false)?;
        ids.push(self.eos.1);
        Ok(ids)
    }

    /// Renders `messages` with the chat template (`add_generation_prompt` opens the assistant turn).
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> anyhow::Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.chat_template).context("compiling the chat template")?;
        let template = env.get_template("chat")?;
        let rendered = template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_ref().map(|b| b.0.clone()).unwrap_or_default(),
                eos_token => self.eos.0.clone(),
            })
            .context("rendering the chat template")?;
        Ok(rendered)
    }
}
