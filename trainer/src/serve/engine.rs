//! The decode engine behind `pairwise-train serve`: one thread owns the model and runs
//! continuous batching over the KV-cache decoder. Requests join the batch as soon as their
//! prompt is prefilled and leave it the step they finish (EOS, a stop string, their token
//! limit, or a client that went away), so a long answer never holds up a short one. Rows of
//! different adapters share each decode step: the base weights are multiplied once for the
//! whole batch and every row adds its own adapter's low-rank delta (see
//! [`crate::peft::bank`]).
//!
//! The batch's caches are left-padded to a common length: a row's keys sit in the columns
//! from its `pad` on, and the additive mask hides the columns before. When the row that set
//! the length leaves, the columns no row uses any more are cut off.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};

use crate::methods::generate::{Finish, Sampling, prompt_mask, sample_token, stop_at};
use crate::model::linear::RowAdapters;
use crate::model::llama::LayerCache;
use crate::model::tokenizer::ChatTokenizer;
use crate::model::{ForwardCtx, LlamaModel};
use crate::peft::bank::{load_into_bank, remove_from_bank};

/// The models a serve process answers for: the base and each adapter by its bank slot.
/// Shared with the HTTP side, which checks request model names against it.
#[derive(Debug, Default)]
pub struct Registry {
    pub base: String,
    /// `(name, slot)` in the order they were added.
    pub adapters: Vec<(String, usize)>,
}

impl Registry {
    /// `Some(None)` for the base model, `Some(Some(slot))` for an adapter, `None` if unknown.
    pub fn resolve(&self, model: &str) -> Option<Option<usize>> {
        if model == self.base {
            return Some(None);
        }
        self.adapters.iter().find(|(name, _)| name == model).map(|&(_, slot)| Some(slot))
    }

    pub fn names(&self) -> Vec<String> {
        std::iter::once(self.base.clone()).chain(self.adapters.iter().map(|(n, _)| n.clone())).collect()
    }
}

/// One sequence to generate.
pub struct SequenceRequest {
    /// The model name as the client asked for it (resolved again when the sequence starts,
    /// so an adapter removed meanwhile fails the request instead of silently using another).
    pub model: String,
    pub prompt: Vec<u32>,
    /// `temperature`, `top_p`, `top_k`, `max_new_tokens`, `stop` and `seed` of this sequence.
    pub sampling: Sampling,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What the engine reports about a sequence, in order: text as it becomes final, then
/// exactly one of `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More of the answer. The concatenated pieces equal `pairwise-train generate`'s text
    /// (leading and trailing whitespace trimmed, stop string excluded).
    Text(String),
    Done {
        finish: Finish,
        completion_tokens: usize,
    },
    Failed(String),
}

enum Command {
    Generate(SequenceRequest),
    AddAdapter { name: String, path: PathBuf, reply: oneshot::Sender<anyhow::Result<()>> },
    RemoveAdapter { name: String, reply: oneshot::Sender<anyhow::Result<()>> },
}

/// The HTTP side's handle on the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    pub registry: Arc<RwLock<Registry>>,
}

impl EngineHandle {
    /// Queues a sequence; its events arrive on the request's channel.
    pub fn generate(&self, request: SequenceRequest) -> anyhow::Result<()> {
        self.commands.send(Command::Generate(request)).map_err(|_| anyhow!("the decode engine has stopped"))
    }

    /// Loads a PEFT LoRA adapter folder under `name` (between two decode steps).
    pub async fn add_adapter(&self, name: String, path: PathBuf) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::AddAdapter { name, path, reply })
            .map_err(|_| anyhow!("the decode engine has stopped"))?;
        answer.await.map_err(|_| anyhow!("the decode engine has stopped"))?
    }

    /// Unloads adapter `name`; its sequences still generating fail with a message.
    pub async fn remove_adapter(&self, name: String) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RemoveAdapter { name, reply })
            .map_err(|_| anyhow!("the decode engine has stopped"))?;
        answer.await.map_err(|_| anyhow!("the decode engine has stopped"))?
    }
}

/// Starts the engine thread on `model` (adapters already in its bank are listed in
/// `registry`). `max_batch` caps the sequences decoded together; more wait in a queue.
pub fn start(
    model: LlamaModel,
    tokenizer: Arc<ChatTokenizer>,
    registry: Registry,
    max_batch: usize,
) -> anyhow::Result<EngineHandle> {
    let (commands, receiver) = std::sync::mpsc::channel();
    let registry = Arc::new(RwLock::new(registry));
    let mut engine = Engine {
        device: model.device().clone(),
        model,
        tokenizer,
        registry: registry.clone(),
        max_batch: max_batch.max(1),
        queue: VecDeque::new(),
        batch: None,
    };
    std::thread::Builder::new()
        .name("decode-engine".into())
        .spawn(move || engine.run(receiver))
        .context("starting the decode engine thread")?;
    Ok(EngineHandle { commands, registry })
}

/// A sequence in the batch.
struct Row {
    slot: Option<usize>,
    /// Cache columns before this row's first key (left padding).
    pad: usize,
    /// RoPE position of the next token fed in (= tokens in the cache so far).
    position: usize,
    prompt_tokens: usize,
    /// Generated tokens; the last one is not in the cache yet.
    tokens: Vec<u32>,
    /// Bytes of the (trimmed) answer already sent.
    sent: usize,
    sampling: Sampling,
    rng: StdRng,
    events: mpsc::UnboundedSender<Event>,
}

/// The sequences decoding together and their left-padded caches (one per layer).
struct Batch {
    rows: Vec<Row>,
    caches: Vec<Option<LayerCache>>,
    /// Cache columns (keys) every row has.
    width: usize,
}

struct Engine {
    model: LlamaModel,
    tokenizer: Arc<ChatTokenizer>,
    registry: Arc<RwLock<Registry>>,
    device: Device,
    max_batch: usize,
    queue: VecDeque<SequenceRequest>,
    batch: Option<Batch>,
}

/// What happened to a row after a token was drawn.
enum Progress {
    Continue,
    Finished,
    /// The client is gone: drop the row silently.
    Abandoned,
}

impl Engine {
    fn run(&mut self, commands: Receiver<Command>) {
        loop {
            // Idle: wait for work. Busy: take what has arrived and keep decoding.
            if self.batch.is_none() && self.queue.is_empty() {
                match commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            loop {
                match commands.recv_timeout(std::time::Duration::ZERO) {
                    Ok(command) => self.handle(command),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) if self.batch.is_none() && self.queue.is_empty() => return,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // On a rayon worker: the matmuls' parallel loops then share the step's thread with
            // the pool instead of waking the pool and sleeping for each of a step's ~200 calls.
            let stepped = rayon::scope(|_| {
                self.admit();
                self.step()
            });
            if let Err(e) = stepped {
                // A failed step leaves the caches in an unknown state: fail the batch, keep serving.
                tracing::error!("decode step failed: {e:#}");
                for row in self.batch.take().map(|b| b.rows).unwrap_or_default() {
                    let _ = row.events.send(Event::Failed(format!("generation failed: {e}")));
                }
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Generate(request) => self.queue.push_back(request),
            Command::AddAdapter { name, path, reply } => {
                let _ = reply.send(self.add_adapter(name, &path));
            }
            Command::RemoveAdapter { name, reply } => {
                let _ = reply.send(self.remove_adapter(&name));
            }
        }
    }

    fn add_adapter(&mut self, name: String, path: &std::path::Path) -> anyhow::Result<()> {
        let mut registry = self.registry.write().expect("registry lock");
        anyhow::ensure!(registry.resolve(&name).is_none(), "a model named {name:?} is already served");
        // A free slot: the smallest not in use (removed adapters' slots are reused).
        let slot = (0..).find(|s| !registry.adapters.iter().any(|(_, used)| used == s)).expect("a free slot");
        load_into_bank(path, &mut self.model, slot)?;
        registry.adapters.push((name, slot));
        Ok(())
    }

    fn remove_adapter(&mut self, name: &str) -> anyhow::Result<()> {
        let mut registry = self.registry.write().expect("registry lock");
        let at = registry
            .adapters
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| anyhow!("no adapter named {name:?} is served"))?;
        let (_, slot) = registry.adapters.remove(at);
        drop(registry);
        if let Some(batch) = &mut self.batch {
            let keep: Vec<bool> = batch.rows.iter().map(|r| r.slot != Some(slot)).collect();
            for row in batch.rows.iter().filter(|r| r.slot == Some(slot)) {
                let _ = row.events.send(Event::Failed(format!("the adapter {name:?} was removed")));
            }
            self.retain(&keep).ok();
        }
        remove_from_bank(&mut self.model, slot);
        Ok(())
    }

    /// Prefills queued sequences into free batch places.
    fn admit(&mut self) {
        while self.batch.as_ref().map_or(0, |b| b.rows.len()) < self.max_batch {
            let Some(request) = self.queue.pop_front() else { return };
            if request.events.is_closed() {
                continue;
            }
            let slot = match self.registry.read().expect("registry lock").resolve(&request.model) {
                Some(slot) => slot,
                None => {
                    let _ = request.events.send(Event::Failed(format!("the model {:?} is not served", request.model)));
                    continue;
                }
            };
            if let Err(e) = self.prefill(request, slot) {
                tracing::error!("prefill failed: {e:#}");
            }
        }
    }

    fn ctx(&self, slots: &[Option<usize>], tokens_per_row: usize) -> candle_core::Result<ForwardCtx> {
        let mut ctx = ForwardCtx::eval(true);
        ctx.row_adapters = Some(RowAdapters::new(slots, tokens_per_row, &self.device)?);
        Ok(ctx)
    }

    /// Runs the prompt alone through the model, draws its first token, and merges its cache
    /// into the batch.
    fn prefill(&mut self, request: SequenceRequest, slot: Option<usize>) -> anyhow::Result<()> {
        let SequenceRequest { prompt, sampling, events, .. } = request;
        let t = prompt.len();
        let fail = |events: &mpsc::UnboundedSender<Event>, e: &anyhow::Error| {
            let _ = events.send(Event::Failed(format!("generation failed: {e}")));
        };
        let result = (|| -> anyhow::Result<(Tensor, Vec<Option<LayerCache>>)> {
            let ctx = self.ctx(&[slot], t)?;
            let (mut caches, _) = self.model.initial_caches(1, &ForwardCtx::eval(false))?;
            let ids = Tensor::from_vec(prompt.clone(), (1, t), &self.device)?;
            let positions = Tensor::arange(0u32, t as u32, &self.device)?.reshape((1, t))?;
            let mask = prompt_mask(&[0], 0, t, 0, t, &self.device)?;
            let logits = self.model.decode_step(&ids, &positions, &mask, &mut caches, &ctx)?;
            Ok((logits, caches))
        })();
        let (logits, caches) = match result {
            Ok(done) => done,
            Err(e) => {
                fail(&events, &e);
                return Err(e);
            }
        };
        let mut row = Row {
            slot,
            pad: 0,
            position: t,
            prompt_tokens: t,
            tokens: Vec::new(),
            sent: 0,
            rng: StdRng::seed_from_u64(sampling.seed),
            sampling,
            events,
        };
        let logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        match self.advance(&mut row, &logits) {
            Ok(Progress::Continue) => {}
            Ok(_) => return Ok(()),
            Err(e) => {
                fail(&row.events, &e);
                return Err(e);
            }
        }
        self.merge(row, caches)
    }

    /// Adds a prefilled row with its caches to the batch, left-padding whichever is shorter.
    fn merge(&mut self, mut row: Row, caches: Vec<Option<LayerCache>>) -> anyhow::Result<()> {
        let len = row.position;
        let Some(batch) = &mut self.batch else {
            self.batch = Some(Batch { rows: vec![row], caches, width: len });
            return Ok(());
        };
        if len > batch.width {
            let grow = len - batch.width;
            for cache in batch.caches.iter_mut().flatten() {
                *cache = left_pad(cache, grow)?;
            }
            for r in &mut batch.rows {
                r.pad += grow;
            }
            batch.width = len;
        }
        row.pad = batch.width - len;
        for (cache, new) in batch.caches.iter_mut().zip(caches) {
            if let (Some(cache), Some(new)) = (cache.as_mut(), new) {
                let new = left_pad(&new, row.pad)?;
                *cache = LayerCache {
                    key: Tensor::cat(&[&cache.key, &new.key], 0)?,
                    value: Tensor::cat(&[&cache.value, &new.value], 0)?,
                    positions: Tensor::cat(&[&cache.positions, &new.positions], 0)?,
                };
            }
        }
        batch.rows.push(row);
        Ok(())
    }

    /// One decode step for every row: feeds each row's last token, draws the next.
    fn step(&mut self) -> anyhow::Result<()> {
        let Some(batch) = &mut self.batch else { return Ok(()) };
        let n = batch.rows.len();
        let keys = batch.width + 1;
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut mask = Vec::with_capacity(n * keys);
        for row in &batch.rows {
            ids.push(*row.tokens.last().expect("a batch row has drawn a token"));
            positions.push(row.position as u32);
            mask.extend((0..keys).map(|c| if c < row.pad { f32::NEG_INFINITY } else { 0.0 }));
        }
        let slots: Vec<Option<usize>> = batch.rows.iter().map(|r| r.slot).collect();
        let mut ctx = ForwardCtx::eval(true);
        ctx.row_adapters = Some(RowAdapters::new(&slots, 1, &self.device)?);
        let logits = self.model.decode_step(
            &Tensor::from_vec(ids, (n, 1), &self.device)?,
            &Tensor::from_vec(positions, (n, 1), &self.device)?,
            &Tensor::from_vec(mask, (n, 1, 1, 1, keys), &self.device)?,
            &mut batch.caches,
            &ctx,
        )?;
        batch.width = keys;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut rows = std::mem::take(&mut self.batch.as_mut().expect("batch").rows);
        let mut keep = Vec::with_capacity(n);
        for (row, logits) in rows.iter_mut().zip(&logits) {
            row.position += 1;
            keep.push(matches!(self.advance(row, logits)?, Progress::Continue));
        }
        self.batch.as_mut().expect("batch").rows = rows;
        self.retain(&keep)
    }

    /// Keeps the rows flagged in `keep` (and their cache rows), then cuts the padding columns
    /// no remaining row needs.
    fn retain(&mut self, keep: &[bool]) -> anyhow::Result<()> {
        let Some(batch) = &mut self.batch else { return Ok(()) };
        if keep.iter().all(|&k| !k) {
            self.batch = None;
            return Ok(());
        }
        if keep.iter().any(|&k| !k) {
            let kept: Vec<u32> = (0..keep.len()).filter(|&i| keep[i]).map(|i| i as u32).collect();
            let index = Tensor::from_vec(kept.clone(), kept.len(), &self.device)?;
            for cache in batch.caches.iter_mut().flatten() {
                *cache = cache.select_rows(&index)?;
            }
            let mut flags = keep.iter();
            batch.rows.retain(|_| *flags.next().expect("one flag per row"));
        }
        let unused = batch.rows.iter().map(|r| r.pad).min().unwrap_or(0);
        if unused > 0 {
            for cache in batch.caches.iter_mut().flatten() {
                let width = cache.key.dim(2)?;
                *cache = LayerCache {
                    key: cache.key.narrow(2, unused, width - unused)?,
                    value: cache.value.narrow(2, unused, width - unused)?,
                    positions: cache.positions.narrow(1, unused, width - unused)?,
                };
            }
            for row in &mut batch.rows {
                row.pad -= unused;
            }
            batch.width -= unused;
        }
        Ok(())
    }

    /// Draws the row's next token from `logits`, sends the text that became final, and
    /// says whether the row goes on.
    fn advance(&self, row: &mut Row, logits: &[f32]) -> anyhow::Result<Progress> {
        if row.events.is_closed() {
            return Ok(Progress::Abandoned);
        }
        let token = sample_token(logits, &row.sampling, &mut row.rng);
        row.tokens.push(token);
        let eos = token == self.tokenizer.eos.1;
        let text = self.tokenizer.inner.decode(&row.tokens, true).map_err(|e| anyhow!("decoding: {e}"))?;
        let stop = stop_at(&text, &row.sampling.stop);
        let finish = if eos {
            Some(Finish::Eos)
        } else if stop.is_some() {
            Some(Finish::Stop)
        } else if row.tokens.len() >= row.sampling.max_new_tokens {
            Some(Finish::Length)
        } else {
            None
        };
        let answer = &text[..stop.unwrap_or(text.len())];
        let ready = match finish {
            Some(_) => answer.trim(),
            None => settled(answer, &row.sampling.stop),
        };
        if ready.len() > row.sent && row.events.send(Event::Text(ready[row.sent..].to_string())).is_err() {
            return Ok(Progress::Abandoned);
        }
        row.sent = row.sent.max(ready.len());
        let Some(finish) = finish else { return Ok(Progress::Continue) };
        let _ = row.events.send(Event::Done { finish, completion_tokens: row.tokens.len() });
        tracing::debug!(prompt_tokens = row.prompt_tokens, completion_tokens = row.tokens.len(), "sequence finished");
        Ok(Progress::Finished)
    }
}

/// The part of an unfinished answer that can be sent: leading whitespace dropped (the final
/// answer is trimmed), and held back at the end whatever may still change — trailing
/// whitespace, an incomplete UTF-8 character (decoded as U+FFFD), and a tail that could be
/// the start of a stop string.
fn settled<'a>(text: &'a str, stop: &[String]) -> &'a str {
    let mut text = text.trim_start();
    if let Some(at) = text.find('\u{FFFD}') {
        text = &text[..at];
    }
    let held = stop
        .iter()
        .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0);
    text[..text.len() - held].trim_end()
}

/// `cache` with `columns` empty key columns in front (hidden by the batch mask).
fn left_pad(cache: &LayerCache, columns: usize) -> candle_core::Result<LayerCache> {
    if columns == 0 {
        return Ok(cache.clone());
    }
    let pad = |t: &Tensor, dim: usize| -> candle_core::Result<Tensor> {
        let mut shape = t.dims().to_vec();
        shape[dim] = columns;
        Tensor::cat(&[&Tensor::zeros(shape, t.dtype(), t.device())?, t], dim)
    };
    Ok(LayerCache { key: pad(&cache.key, 2)?, value: pad(&cache.value, 2)?, positions: pad(&cache.positions, 1)? })
}

#[cfg(test)]
mod tests {
    use super::settled;

    #[test]
    fn unsettled_tails_are_held_back() {
        let stop = vec!["</s>".to_string(), "\n\nUser".to_string()];
        assert_eq!(settled("  Hello world", &stop), "Hello world");
        assert_eq!(settled("Hello </", &stop), "Hello");
        assert_eq!(settled("Hello\n\nUs", &stop), "Hello");
        assert_eq!(settled("caf\u{FFFD}", &stop), "caf");
        assert_eq!(settled("Hello ", &[]), "Hello");
    }
}
