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
    /// Extra variables the chat template sees (transformers' `apply_chat_template` kwargs).
    template_variables: std::collections::BTreeMap<String, serde_json::Value>,
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
        Ok(ChatTokenizer {
            inner,
            bos,
            eos,
            pad_id,
            add_bos: config.add_bos_token.unwrap_or(false),
            chat_template,
            template_variables: Default::default(),
        })
    }

    /// Whether prompts start with BOS, by `add_bos_token` or by the post-processor.
    pub fn adds_bos(&self) -> bool {
        match (&self.bos, self.encode_prompt("a")) {
            (Some((_, bos)), Ok(ids)) => ids.first() == Some(bos),
            _ => false,
        }
    }

    /// The Jinja chat template prompts are rendered with.
    pub fn chat_template(&self) -> &str {
        &self.chat_template
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

    /// Passes `name = value` to every later rendering of the chat template (like a keyword
    /// argument of transformers' `apply_chat_template`, e.g. `enable_thinking`).
    pub fn set_template_variable(&mut self, name: &str, value: serde_json::Value) {
        self.template_variables.insert(name.to_string(), value);
    }

    /// Renders `messages` with the chat template (`add_generation_prompt` opens the assistant turn)
    /// the way transformers' `apply_chat_template` does: `trim_blocks` and `lstrip_blocks` on,
    /// loop controls, Python string methods, `raise_exception` and `strftime_now`; `tools` and
    /// `enable_thinking` are left undefined, as transformers leaves them when not given, unless
    /// set with [`ChatTokenizer::set_template_variable`].
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> anyhow::Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |format: String| -> Result<String, minijinja::Error> {
            strftime(time::OffsetDateTime::now_utc(), &format)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
        });
        env.add_template("chat", &self.chat_template).context("compiling the chat template")?;
        let template = env.get_template("chat")?;
        let rendered = template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_ref().map(|b| b.0.clone()).unwrap_or_default(),
                eos_token => self.eos.0.clone(),
                ..minijinja::Value::from_serialize(&self.template_variables)
            })
            .context("rendering the chat template")?;
        Ok(rendered)
    }
}

/// Python's `strftime` for the directives chat templates use (Llama 3.x writes
/// `strftime_now("%d %b %Y")` into its system prompt); others are an error naming them.
fn strftime(now: time::OffsetDateTime, format: &str) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month = now.month();
        let weekday = now.weekday();
        let _ = match chars.next() {
            Some('d') => write!(out, "{:02}", now.day()),
            Some('e') => write!(out, "{:2}", now.day()),
            Some('m') => write!(out, "{:02}", u8::from(month)),
            Some('b') => write!(out, "{}", &month.to_string()[..3]),
            Some('B') => write!(out, "{month}"),
            Some('Y') => write!(out, "{}", now.year()),
            Some('y') => write!(out, "{:02}", now.year() % 100),
            Some('a') => write!(out, "{}", &weekday.to_string()[..3]),
            Some('A') => write!(out, "{weekday}"),
            Some('j') => write!(out, "{:03}", now.ordinal()),
            Some('H') => write!(out, "{:02}", now.hour()),
            Some('M') => write!(out, "{:02}", now.minute()),
            Some('S') => write!(out, "{:02}", now.second()),
            Some('%') => write!(out, "%"),
            Some(other) => return Err(format!("strftime_now: %{other} is not supported")),
            None => return Err("strftime_now: the format ends in a lone %".into()),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The expected strings below are what Python's jinja2 renders from the same templates and
    // messages with transformers' settings (sandboxed, trim_blocks, lstrip_blocks, loop
    // controls, the same two globals): checked with jinja2 3.1.6.

    /// A tokenizer over a tiny word vocabulary with `template` as its chat template.
    fn with_template(template: &str) -> ChatTokenizer {
        let tokenizer: Tokenizer = serde_json::from_value(crate::synthetic::tokenizer_json()).unwrap();
        ChatTokenizer::from_parts(tokenizer, Some("<s>"), "</s>", Some("<pad>"), true, Some(template.into())).unwrap()
    }

    fn msgs(turns: &[(&str, &str)]) -> Vec<Message> {
        turns.iter().map(|(role, content)| Message { role: role.to_string(), content: content.to_string() }).collect()
    }

    /// The constructs of Llama 3.x's template: a namespace, `tools is not none` on an
    /// undefined `tools`, the date from `strftime_now`, the system turn taken off the list,
    /// and blocks written without `-` (trim_blocks / lstrip_blocks must remove their lines).
    const LLAMA3_STYLE: &str = r#"{{- bos_token }}
{% set ns = namespace(system="") %}
{% if not date_string is defined %}
    {% set date_string = strftime_now("%d %b %Y") %}
{% endif %}
{% if messages[0]['role'] == 'system' %}
    {% set ns.system = messages[0]['content']|trim %}
    {% set messages = messages[1:] %}
{% endif %}
<|start_header_id|>system<|end_header_id|>

{% if tools is not none and tools is defined %}Tools!{% endif %}
Today Date: {{ date_string }}

{{ ns.system }}<|eot_id|>
{% for message in messages %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}"#;

    #[test]
    fn llama3_style_template_renders_like_transformers() {
        let t = with_template(LLAMA3_STYLE);
        let text = t.render_chat(&msgs(&[("system", " Be brief. "), ("user", "Hi")]), true).unwrap();
        let date = strftime(time::OffsetDateTime::now_utc(), "%d %b %Y").unwrap();
        let expected = format!(
            "<s>\n<|start_header_id|>system<|end_header_id|>\n\nToday Date: {date}\n\nBe brief.<|eot_id|>\n\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(text, expected);
    }

    /// Qwen3's constructs: a namespace updated inside a loop over `messages[::-1]`, string
    /// methods (`startswith`, `split`, `rstrip`), `loop.index0`, `{% break %}`, and
    /// `enable_thinking is defined` on an undefined variable.
    const QWEN3_STYLE: &str = r#"{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == "user" and not message.content.startswith('<tool_response>') %}
        {%- set ns.last_query_index = index %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content %}
    {%- if message.role == "assistant" and '</think>' in content %}
        {%- set content = content.split('</think>')[-1].lstrip('
') %}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '
' + content.rstrip() + '<|im_end|>
' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant
' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>

</think>

' }}
    {%- endif %}
{%- endif %}
{{- ns.last_query_index }}"#;

    #[test]
    fn template_variables_reach_the_template() {
        let mut t = with_template(QWEN3_STYLE);
        t.set_template_variable("enable_thinking", false.into());
        let text = t.render_chat(&msgs(&[("user", "a")]), true).unwrap();
        assert_eq!(text, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n0");
    }

    #[test]
    fn qwen3_style_template_renders_like_transformers() {
        let t = with_template(QWEN3_STYLE);
        let turns = msgs(&[
            ("user", "a"),
            (
                "assistant",
                "<think>x</think>

b  ",
            ),
            ("user", "c"),
        ]);
        let text = t.render_chat(&turns, true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n2"
        );
    }

    /// Gemma's constructs: `raise_exception` on a bad role order, the system text folded into
    /// the first user turn, `loop.first`, `{% continue %}`.
    const GEMMA3_STYLE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['content'] == '' -%}{%- continue -%}{%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") + message['content'] | trim + '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model
' }}{%- endif -%}"#;

    #[test]
    fn gemma3_style_template_renders_and_raises() {
        let t = with_template(GEMMA3_STYLE);
        let text = t.render_chat(&msgs(&[("system", "S"), ("user", "Hi"), ("assistant", "Yo")]), true).unwrap();
        assert_eq!(
            text,
            "<s><start_of_turn>user\nS\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>model\n"
        );
        let err = t.render_chat(&msgs(&[("user", "a"), ("user", "b")]), true).unwrap_err();
        assert!(format!("{err:#}").contains("Conversation roles must alternate"), "{err:#}");
    }

    #[test]
    fn strftime_covers_the_directives_templates_use() {
        let date = time::Date::from_calendar_date(2026, time::Month::March, 5).unwrap();
        let at = date.with_hms(14, 7, 9).unwrap().assume_utc();
        assert_eq!(strftime(at, "%d %b %Y").unwrap(), "05 Mar 2026");
        assert_eq!(strftime(at, "%A %B %e, %H:%M:%S %j %y %%").unwrap(), "Thursday March  5, 14:07:09 064 26 %");
        assert!(strftime(at, "%Q").unwrap_err().contains("%Q"));
    }
}
