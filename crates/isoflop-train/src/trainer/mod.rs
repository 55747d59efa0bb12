//! The entry point: [`train`] one run from a [`TrainJob`], reporting through [`TrainHooks`].

use crate::checkpoint::{self, CheckpointError, LastProgress, Manifest};
use crate::data::BatchSampler;
use crate::model::Transformer;
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::Schedule;
use isoflop_core::{EvalRef, FailureClass, Precision, RunConfig};
use isoflop_data::{Shard, ShardError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tch::{TchError, Tensor, nn};

/// Serialises seeding libtorch's global generator and drawing the initial parameters, so
/// concurrent [`train`] calls in one process each get the initialisation of their own seed.
pub(crate) static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Everything needed to train (or resume) one run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The run's id, recorded in (and checked against) checkpoints.
    pub run_id: String,
    /// What to train.
    pub config: RunConfig,
    /// Where `step-XXXXXXXX/` checkpoints are written (the newest 2 are kept).
    pub checkpoint_dir: PathBuf,
    /// A checkpoint directory to resume from; `None` starts at step 0.
    pub resume_from: Option<PathBuf>,
    /// Save a checkpoint every this many steps (0: only on stop and at the end).
    pub checkpoint_every: u64,
    /// Steps whose checkpoints are written whatever `checkpoint_every` says and never
    /// deleted (evaluation jobs score them). The final checkpoint is always kept.
    pub keep_steps: Vec<u64>,
    /// Report progress every this many steps (0: only at the first and last step).
    pub progress_every: u64,
    /// libtorch intra-op threads (0 leaves libtorch's default). Process-wide.
    pub threads: usize,
    /// Device to train on.
    pub device: tch::Device,
    /// Sequences per forward/backward pass (gradient accumulation); 0: the whole batch.
    /// The step's loss and gradient are the mean over the whole batch either way. It is
    /// halved (down to 1) when a step runs out of device memory.
    pub micro_batch: usize,
    /// Numeric precision: fp32, or bf16 mixed precision (bf16 forward, backward and eval;
    /// fp32 master weights, gradient accumulation, clipping, AdamW and checkpoints).
    pub precision: Precision,
    /// The store the run belongs to, written into every checkpoint's manifest (empty: none).
    pub store_id: String,
}

/// Callbacks from a running [`train`].
pub trait TrainHooks {
    /// A progress point; returning [`Control::Stop`] checkpoints and stops the run.
    fn progress(&mut self, p: &Progress) -> Control;
    /// A checkpoint has been durably written.
    fn checkpoint_saved(&mut self, c: &CheckpointInfo);
    /// Something worth telling the operator (e.g. an out-of-memory retry with a smaller
    /// micro-batch).
    fn notice(&mut self, _msg: &str) {}
}

/// Hooks that ignore everything and never stop the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl TrainHooks for NoHooks {
    fn progress(&mut self, _: &Progress) -> Control {
        Control::Continue
    }
    fn checkpoint_saved(&mut self, _: &CheckpointInfo) {}
}

/// A progress point: throughput excludes the time spent in hooks and checkpoint writes;
/// `elapsed_seconds` counts from this `train` call's first step; `micro_batch` is always set;
/// `mfu` is left at 0 (the caller knows the device's peak).
pub use isoflop_core::Progress;

/// What a progress hook wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Checkpoint now and return [`TrainOutcome::Stopped`].
    Stop,
}

/// A checkpoint that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Steps completed at the checkpoint.
    pub step: u64,
    /// The checkpoint directory.
    pub path: PathBuf,
    /// Training tokens consumed at the checkpoint.
    pub tokens_seen: u64,
}

/// How a [`train`] call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// All steps done and the final checkpoint written (evaluation jobs score it).
    /// `final_loss` is the loss of the last progress point.
    Completed { final_loss: f64 },
    /// Stopped on request after `step` steps; resume from `checkpoint`.
    Stopped { step: u64, checkpoint: PathBuf },
    /// The training loss became NaN or infinite (detected at progress points and before
    /// checkpoints), or blew up: the mean loss of [`BLOWUP_WINDOWS`] consecutive progress
    /// windows after warmup exceeded [`BLOWUP_FACTOR`] times the best window mean after
    /// warmup. `step` is where it was seen, `loss` the offending mean (no checkpoint of a
    /// diverged model is written).
    Diverged { step: u64, loss: f64 },
}

/// Why a run could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A shard could not be opened or is malformed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The device (or host) ran out of memory, even at a micro-batch of one sequence.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// libtorch failed otherwise (device errors, internal errors).
    #[error("libtorch: {0}")]
    Torch(TchError),
    /// A file-system operation on `path` failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Writing or reading a checkpoint failed.
    #[error("checkpoint {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The run's configuration or data is unusable (the message names the field or file).
    #[error("invalid run: {0}")]
    Config(String),
}

impl From<TchError> for TrainError {
    /// libtorch's errors enter here; an out-of-memory one becomes [`TrainError::OutOfMemory`].
    fn from(e: TchError) -> Self {
        if is_oom(&e) { TrainError::OutOfMemory(e.to_string()) } else { TrainError::Torch(e) }
    }
}

impl TrainError {
    /// The failure class of the attempt this error ends: `user_error` for the run's own
    /// configuration or data ([`TrainError::is_user_error`]), `oom` for
    /// [`TrainError::OutOfMemory`], `unknown` otherwise.
    pub fn class(&self) -> FailureClass {
        match self {
            TrainError::OutOfMemory(_) => FailureClass::Oom,
            e if e.is_user_error() => FailureClass::UserError,
            _ => FailureClass::Unknown,
        }
    }

    /// True when the error comes from the run's configuration or data (bad config, missing
    /// or malformed shard, digest mismatch, vocabulary too large, missing resume checkpoint)
    /// and retrying the same run cannot help; false for environmental or internal failures.
    pub fn is_user_error(&self) -> bool {
        use std::io::ErrorKind::{NotFound, PermissionDenied};
        match self {
            TrainError::Config(_) => true,
            TrainError::Shard(ShardError::Io { source, .. }) => {
                matches!(source.kind(), NotFound | PermissionDenied)
            }
            TrainError::Shard(_) => true,
            TrainError::Checkpoint(e) => e.is_not_found(),
            TrainError::Torch(_) | TrainError::OutOfMemory(_) | TrainError::Io { .. } => false,
        }
    }
}

/// Opens a shard and checks it against the run's reference and model.
pub(crate) fn open_shard(r: &EvalRef, vocab: u64) -> Result<Shard, TrainError> {
    if r.path.is_empty() {
        return Err(TrainError::Config(format!("shard {:?} has no path", r.name)));
    }
    let shard = Shard::open(&r.path)?;
    let h = shard.header();
    if !h.digest.eq_ignore_ascii_case(&r.digest) {
        return Err(TrainError::Config(format!(
            "{}: shard digest {} does not match the run's digest {} for {:?}",
            r.path, h.digest, r.digest, r.name
        )));
    }
    if h.vocab_size as u64 > vocab {
        return Err(TrainError::Config(format!("{}: shard vocabulary {} exceeds the model's {vocab}", r.path, h.vocab_size)));
    }
    // The header's digest is the run's; the tokens must be too (a same-size shard with
    // flipped bytes trained and succeeded). Hashed once per file per machine.
    let cache = isoflop_data::shard::verify_cache_dir();
    if shard.verify_once(cache.as_deref())? {
        tracing::info!(target: "worker", "verified shard {} ({} tokens)", r.path, h.token_count);
    }
    Ok(shard)
}

/// Trains (or resumes) one run to completion, to a stop request, or to divergence.
///
/// Initialisation is a function of `config.seed` (libtorch's generator is seeded right
/// before the model is built) and the data of step `s` of `(seed, s)`, so a resumed run
/// reproduces an uninterrupted one. `stop` is polled before every step; when it is set, or
/// when a progress hook returns [`Control::Stop`], a checkpoint is written and
/// [`TrainOutcome::Stopped`] returned. After the last step a final checkpoint is written.
///
/// Seeding and initialisation hold a crate-wide lock, so concurrent `train` calls in one
/// process do not disturb each other's initialisation; other code drawing from libtorch's
/// global generator at that moment could. Training itself draws no random numbers.
/// `job.threads` sets libtorch's process-wide intra-op thread count, and the process's C
/// allocator is tuned to keep freed memory ([`crate::alloc::keep_freed_memory`]).
pub fn train(job: &TrainJob, hooks: &mut dyn TrainHooks, stop: &AtomicBool) -> Result<TrainOutcome, TrainError> {
    let cfg = &job.config;
    cfg.validate().map_err(|e| TrainError::Config(e.to_string()))?;
    if job.threads > 0 {
        tch::set_num_threads(job.threads.min(i32::MAX as usize) as i32);
    }
    crate::alloc::keep_freed_memory();
    let vocab = cfg.model.vocab_size;
    let train_shard = open_shard(&cfg.data.train, vocab)?;
    let (batch, seq_len) = (cfg.recipe.batch as usize, cfg.model.seq_len as usize);
    let sampler = BatchSampler::new(&train_shard, batch, seq_len, cfg.seed).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::create_dir_all(&job.checkpoint_dir).map_err(|source| TrainError::Io { path: job.checkpoint_dir.clone(), source })?;

    let vs = nn::VarStore::new(job.device);
    let model = Transformer::seeded(&vs.root(), &cfg.model, cfg.seed)?;
    let compute = match job.precision {
        Precision::Fp32 => tch::Kind::Float,
        Precision::Bf16 => tch::Kind::BFloat16,
    };
    let mut opt = AdamW::with_compute_kind(model.params(), AdamWConfig::from_recipe(&cfg.recipe), compute)?;
    let (start, last_progress) = match &job.resume_from {
        Some(path) => resume(job, path, &mut opt)?,
        None => (0, None),
    };

    let mut run = Run {
        job,
        hooks,
        model: &model,
        opt,
        tokens_per_step: cfg.tokens_per_step(),
        last_saved: job.resume_from.clone().map(|p| (start, p)),
        excluded: Duration::ZERO,
        micro_batch: if job.micro_batch == 0 { batch } else { job.micro_batch.min(batch) },
        last_progress,
    };
    let total = cfg.recipe.steps;
    let outcome = run.train_loop(&sampler, &Schedule::from_recipe(&cfg.recipe), start, stop)?;
    match outcome {
        LoopEnd::Done(Some(final_loss)) => Ok(TrainOutcome::Completed { final_loss }),
        // Nothing trained in this call (resumed at the end). The final train loss is the last
        // step's progress point, whatever the interruptions: the one the final checkpoint
        // recorded, reported again (a killed coordinator may never have stored it).
        LoopEnd::Done(None) => match run.last_progress.filter(|p| p.step == total) {
            Some(last) => {
                let p = Progress {
                    step: total,
                    total_steps: total,
                    loss: last.loss,
                    lr: last.lr,
                    grad_norm: last.grad_norm,
                    tokens_seen: cfg.tokens_at(total),
                    tokens_per_second: 0.0,
                    mfu: 0.0,
                    elapsed_seconds: 0.0,
                    micro_batch: Some(run.micro_batch as u64),
                };
                run.report(&p);
                Ok(TrainOutcome::Completed { final_loss: last.loss })
            }
            // A checkpoint of an older build: score the last batch.
            None => {
                let final_loss = tch::no_grad(|| {
                    let b = sampler.batch(total - 1, job.device)?;
                    model.loss(&b.inputs, &b.targets)?.f_double_value(&[])
                })?;
                Ok(TrainOutcome::Completed { final_loss })
            }
        },
        LoopEnd::Early(outcome) => Ok(outcome),
    }
}

fn resume(job: &TrainJob, path: &Path, opt: &mut AdamW) -> Result<(u64, Option<LastProgress>), TrainError> {
    let manifest = checkpoint::read_manifest(path)?;
    if manifest.run_id != job.run_id {
        return Err(TrainError::Config(format!("{}: checkpoint of run {}, not {}", path.display(), manifest.run_id, job.run_id)));
    }
    if manifest.step > job.config.recipe.steps {
        return Err(TrainError::Config(format!(
            "{}: checkpoint at step {} is past the run's {} steps",
            path.display(),
            manifest.step,
            job.config.recipe.steps
        )));
    }
    let loaded = checkpoint::load(path, opt)?;
    Ok((loaded.step, loaded.last_progress))
}

enum LoopEnd {
    /// All steps done and the final checkpoint written; the last reported loss, if any.
    Done(Option<f64>),
    Early(TrainOutcome),
}

/// A progress window whose mean loss exceeds this multiple of the best window mean (after
/// warmup) counts towards a blow-up.
pub const BLOWUP_FACTOR: f64 = 2.0;
/// Consecutive such windows that end the run as diverged.
pub const BLOWUP_WINDOWS: u32 = 3;

/// Watches progress-window mean losses for a sustained blow-up. Its state is not
/// checkpointed: after a resume the best mean is re-learnt from the windows that follow.
#[derive(Debug, Clone)]
pub(crate) struct BlowUpWatch {
    warmup_steps: u64,
    best: Option<f64>,
    strikes: u32,
}

impl BlowUpWatch {
    pub(crate) fn new(warmup_steps: u64) -> Self {
        Self { warmup_steps, best: None, strikes: 0 }
    }

    /// Records the mean loss of the window ending at `step`; true when the run has blown up.
    /// Windows that end inside the warmup are ignored.
    pub(crate) fn observe(&mut self, step: u64, mean: f64) -> bool {
        if step <= self.warmup_steps || !mean.is_finite() {
            return false;
        }
        match self.best {
            Some(best) if mean > BLOWUP_FACTOR * best => {
                self.strikes += 1;
                return self.strikes >= BLOWUP_WINDOWS;
            }
            Some(best) if mean < best => self.best = Some(mean),
            None => self.best = Some(mean),
            Some(_) => {}
        }
        self.strikes = 0;
        false
    }
}

/// Losses accumulated on the device since the last progress point.
struct Window {
    sum: Option<Tensor>,
    steps: u64,
    since: Instant,
}

impl Window {
    fn new() -> Self {
        Self { sum: None, steps: 0, since: Instant::now() }
    }

    fn push(&mut self, loss: &Tensor) -> Result<(), TchError> {
        let l = loss.f_detach()?.f_to_kind(tch::Kind::Double)?;
        self.sum = Some(match self.sum.take() {
            Some(s) => s.f_add(&l)?,
            None => l,
        });
        self.steps += 1;
        Ok(())
    }

    /// Mean loss of the window (reads it back: a device sync). `None` when empty.
    fn mean(&self) -> Result<Option<f64>, TchError> {
        match &self.sum {
            Some(s) => Ok(Some(s.f_double_value(&[])? / self.steps as f64)),
            None => Ok(None),
        }
    }
}

struct Run<'a> {
    job: &'a TrainJob,
    hooks: &'a mut dyn TrainHooks,
    model: &'a Transformer,
    opt: AdamW,
    tokens_per_step: u64,
    last_saved: Option<(u64, PathBuf)>,
    /// Time spent in hooks and checkpoint writes inside the current progress window.
    excluded: Duration,
    /// Sequences per forward/backward pass (halved on out-of-memory).
    micro_batch: usize,
    /// The newest progress point reported (or read from the checkpoint resumed from).
    last_progress: Option<LastProgress>,
}

/// True when a libtorch error is an allocation failure. libtorch's C API hands its
/// exceptions over as their message only (`c10::OutOfMemoryError` says "CUDA out of memory",
/// the CPU allocator "DefaultCPUAllocator: can't allocate memory"), so this one function reads
/// the text; everything past it sees [`TrainError::OutOfMemory`].
pub fn is_oom(e: &TchError) -> bool {
    let msg = e.to_string();
    msg.contains("out of memory") || msg.contains("DefaultCPUAllocator: can't allocate")
}

/// Runs `attempt(micro)` and, while it fails with an out-of-memory error and `micro > 1`,
/// halves `micro` (not below 1), calls `on_retry(old, new)` and tries again. `attempt` must
/// start from a clean state (e.g. zero the gradients first) since a failed attempt may have
/// accumulated part of its work. `micro` is left at the size that succeeded (or failed last).
pub fn with_oom_retry<T>(
    micro: &mut usize,
    mut attempt: impl FnMut(usize) -> Result<T, TchError>,
    mut on_retry: impl FnMut(usize, usize),
) -> Result<T, TchError> {
    loop {
        match attempt(*micro) {
            Err(e) if is_oom(&e) && *micro > 1 => {
                let smaller = (*micro / 2).max(1);
                on_retry(*micro, smaller);
                *micro = smaller;
            }
            other => return other,
        }
    }
}

/// Zeroes the gradients, then runs forward and backward over `inputs`/`targets` (`[B, T]`)
/// in micro-batches of at most `micro` sequences (the last one may be smaller), each loss
/// scaled by its share of the batch, so the accumulated gradient is that of the batch mean
/// (under mixed precision each micro-batch's gradient is folded into the fp32 master
/// gradients, so the accumulation is in fp32). Returns the (detached) mean loss over the
/// whole batch.
pub fn accumulate_grads(
    model: &Transformer,
    opt: &mut AdamW,
    inputs: &Tensor,
    targets: &Tensor,
    micro: usize,
) -> Result<Tensor, TchError> {
    opt.zero_grad();
    let b = inputs.size().first().copied().unwrap_or(0);
    let micro = (micro.max(1) as i64).min(b.max(1));
    if micro >= b {
        let loss = model.loss(inputs, targets)?;
        loss.f_backward()?;
        return loss.f_detach();
    }
    let mut total: Option<Tensor> = None;
    let mut start = 0;
    while start < b {
        let n = micro.min(b - start);
        let loss = model.loss(&inputs.f_narrow(0, start, n)?, &targets.f_narrow(0, start, n)?)?;
        let scaled = loss.f_mul_scalar(n as f64 / b as f64)?;
        scaled.f_backward()?;
        opt.fold_grads()?;
        let scaled = scaled.f_detach()?;
        total = Some(match total.take() {
            Some(t) => t.f_add(&scaled)?,
            None => scaled,
        });
        start += n;
    }
    Ok(total.expect("a non-empty batch"))
}

impl Run<'_> {
    fn train_loop(
        &mut self,
        sampler: &BatchSampler<'_>,
        schedule: &Schedule,
        start: u64,
        stop: &AtomicBool,
    ) -> Result<LoopEnd, TrainError> {
        let total = self.job.config.recipe.steps;
        let device = self.job.device;
        let started = Instant::now();
        let mut window = Window::new();
        let mut blowup = BlowUpWatch::new(schedule.warmup);
        let mut last_loss = None;
        let mut step = start;
        while step < total {
            if stop.load(Ordering::Relaxed) {
                return self.stop_at(step, &window);
            }
            let batch = sampler.batch(step, device)?;
            let (model, opt, hooks) = (self.model, &mut self.opt, &mut *self.hooks);
            let loss = with_oom_retry(
                &mut self.micro_batch,
                |micro| accumulate_grads(model, opt, &batch.inputs, &batch.targets, micro),
                |old, new| hooks.notice(&format!("out of memory at micro-batch {old}; retrying with {new}")),
            )?;
            let lr = schedule.lr(step);
            if step == 0 {
                let initial = loss.f_double_value(&[])?;
                if !initial.is_finite() {
                    return Ok(LoopEnd::Early(TrainOutcome::Diverged { step: 0, loss: initial }));
                }
                let p = Progress {
                    step: 0,
                    total_steps: total,
                    loss: initial,
                    lr,
                    grad_norm: self.opt.grad_norm()?.f_double_value(&[])?,
                    tokens_seen: 0,
                    tokens_per_second: 0.0,
                    mfu: 0.0,
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                    micro_batch: Some(self.micro_batch as u64),
                };
                if self.report(&p) == Control::Stop {
                    return self.stop_at(0, &window);
                }
            }
            let grad_norm = self.opt.step(lr)?;
            step += 1;
            window.push(&loss)?;

            let every = self.job.progress_every;
            if step == total || (every > 0 && step.is_multiple_of(every)) {
                let mean = window.mean()?.expect("window holds this step");
                if !mean.is_finite() || blowup.observe(step, mean) {
                    return Ok(LoopEnd::Early(TrainOutcome::Diverged { step, loss: mean }));
                }
                let secs = window.since.elapsed().saturating_sub(self.excluded).as_secs_f64();
                let p = Progress {
                    step,
                    total_steps: total,
                    loss: mean,
                    lr,
                    grad_norm: grad_norm.f_double_value(&[])?,
                    tokens_seen: step * self.tokens_per_step,
                    tokens_per_second: if secs > 0.0 { (window.steps * self.tokens_per_step) as f64 / secs } else { 0.0 },
                    mfu: 0.0,
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                    micro_batch: Some(self.micro_batch as u64),
                };
                last_loss = Some(mean);
                self.last_progress = Some(LastProgress { step, loss: mean, lr, grad_norm: p.grad_norm });
                window = Window::new();
                self.excluded = Duration::ZERO;
                if self.report(&p) == Control::Stop {
                    return self.stop_at(step, &window);
                }
            }
            let every = self.job.checkpoint_every;
            if ((every > 0 && step.is_multiple_of(every)) || self.job.keep_steps.contains(&step)) && step < total {
                if let Some(diverged) = self.check_finite(step, &window)? {
                    return Ok(LoopEnd::Early(diverged));
                }
                self.save(step)?;
            }
        }
        if let Some(diverged) = self.check_finite(total, &window)? {
            return Ok(LoopEnd::Early(diverged));
        }
        if self.last_saved.as_ref().map(|(s, _)| *s) != Some(total) {
            self.save(total)?;
        }
        Ok(LoopEnd::Done(last_loss))
    }

    /// Calls the progress hook; its time is excluded from the throughput.
    fn report(&mut self, p: &Progress) -> Control {
        let t0 = Instant::now();
        let control = self.hooks.progress(p);
        self.excluded += t0.elapsed();
        control
    }

    fn check_finite(&self, step: u64, window: &Window) -> Result<Option<TrainOutcome>, TchError> {
        Ok(match window.mean()? {
            Some(loss) if !loss.is_finite() => Some(TrainOutcome::Diverged { step, loss }),
            _ => None,
        })
    }

    fn stop_at(&mut self, step: u64, window: &Window) -> Result<LoopEnd, TrainError> {
        if let Some(diverged) = self.check_finite(step, window)? {
            return Ok(LoopEnd::Early(diverged));
        }
        let checkpoint = match &self.last_saved {
            Some((s, path)) if *s == step => path.clone(),
            _ => self.save(step)?,
        };
        Ok(LoopEnd::Early(TrainOutcome::Stopped { step, checkpoint }))
    }

    fn save(&mut self, step: u64) -> Result<PathBuf, TrainError> {
        let t0 = Instant::now();
        let tokens_seen = step * self.tokens_per_step;
        let manifest = Manifest {
            format_version: checkpoint::FORMAT_VERSION,
            run_id: self.job.run_id.clone(),
            step,
            tokens_seen,
            optimizer_step: self.opt.step_count(),
            last_progress: self.last_progress,
            store_id: Some(self.job.store_id.clone()).filter(|s| !s.is_empty()),
            state_sha256: None,
            state_bytes: None,
        };
        let path = checkpoint::save_keeping(
            &self.job.checkpoint_dir,
            &manifest,
            &self.opt,
            checkpoint::DEFAULT_KEEP,
            &self.job.keep_steps,
        )?;
        self.last_saved = Some((step, path.clone()));
        self.hooks.checkpoint_saved(&CheckpointInfo { step, path: path.clone(), tokens_seen });
        self.excluded += t0.elapsed();
        Ok(path)
    }
}

#[cfg(test)]
mod tests;
