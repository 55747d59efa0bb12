//! Training end to end on a tiny model: loss, checkpoints, bit-identical resume, bf16, micro-batches, divergence, bad data.

use super::*;
use isoflop_core::{DataRef, EvalScore, ModelShape, Recipe};
use isoflop_data::ShardWriter;
use tch::Device;

const TEXT: &str = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! ";

/// A byte-level shard of `repeats` copies of `TEXT` (one document each, 256 = end-of-text).
fn write_shard(dir: &Path, name: &str, repeats: usize) -> EvalRef {
    let path = dir.join(format!("{name}.bin"));
    let mut w = ShardWriter::create(&path, 259).unwrap();
    for _ in 0..repeats {
        let mut toks: Vec<u32> = TEXT.bytes().map(u32::from).collect();
        toks.push(256);
        w.push_document(&toks, TEXT.len() as u64).unwrap();
    }
    let h = w.finish().unwrap();
    EvalRef { name: name.into(), path: path.to_string_lossy().into_owned(), digest: h.digest }
}

fn config(dir: &Path, steps: u64) -> RunConfig {
    RunConfig {
        model: ModelShape {
            vocab_size: 259,
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn_hidden: 64,
            seq_len: 32,
            rope_theta: 10000.0,
            rope_scaling: None,
            qk_norm: true,
            tie_embeddings: false,
            norm_eps: 1e-5,
            init_std: 0.02,
        },
        recipe: Recipe {
            batch: 8,
            steps,
            lr: 1e-2,
            warmup_frac: 0.1,
            decay_frac: 0.2,
            min_lr_frac: 0.1,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            cautious: false,
            wd_schedule: false,
            decay_embeddings: false,
            decay_norms: false,
        },
        data: DataRef { tokenizer: isoflop_core::Tokenizer::Byte, train: write_shard(dir, "train", 200) },
        seed: 7,
    }
}

fn job(config: RunConfig, checkpoint_dir: PathBuf) -> TrainJob {
    TrainJob {
        run_id: config.run_id().0,
        config,
        checkpoint_dir,
        resume_from: None,
        checkpoint_every: 0,
        keep_steps: Vec::new(),
        progress_every: 5,
        threads: 1,
        device: Device::Cpu,
        micro_batch: 0,
        precision: Precision::Fp32,
        store_id: "teststore".into(),
    }
}

/// Records everything; stops at `stop_at` (by returning Stop, or by raising `flag`).
#[derive(Default)]
struct Recorder {
    progress: Vec<Progress>,
    saved: Vec<CheckpointInfo>,
    stop_at: Option<u64>,
    flag: Option<std::sync::Arc<AtomicBool>>,
}

impl TrainHooks for Recorder {
    fn progress(&mut self, p: &Progress) -> Control {
        self.progress.push(p.clone());
        if self.stop_at == Some(p.step) {
            if let Some(f) = &self.flag {
                f.store(true, Ordering::Relaxed);
            } else {
                return Control::Stop;
            }
        }
        Control::Continue
    }
    fn checkpoint_saved(&mut self, c: &CheckpointInfo) {
        self.saved.push(c.clone());
    }
}

/// The held-out text's score on a checkpoint, by an evaluation job (256 tokens).
fn heldout(dir: &Path, cfg: &RunConfig, checkpoint: &Path, precision: Precision) -> EvalScore {
    use isoflop_core::eval::{EvalJobConfig, EvalTask, TaskKind, TextTask};
    let m = checkpoint::read_manifest(checkpoint).unwrap();
    let text = TextTask { distributions: vec![write_shard(dir, "heldout", 20)], tokens: 256, skip_tokens: 0 };
    let job =
        EvalJobConfig { run: cfg.run_id(), step: m.step, task: EvalTask { name: "heldout".into(), kind: TaskKind::Text(text) } };
    let job = crate::EvalJob { run: cfg.clone(), job, checkpoint: checkpoint.into(), device: Device::Cpu, precision, threads: 1 };
    let metrics = crate::run_eval(&job, &mut |_, _| Control::Continue).unwrap().unwrap().metrics;
    let v = |name: &str| metrics.iter().find(|x| x.metric == name).unwrap().value;
    EvalScore {
        distribution: "heldout".into(),
        loss: v("loss"),
        bits_per_byte: v("bpb"),
        tokens: v("tokens") as u64,
        bytes: v("bytes"),
    }
}

fn final_ckpt(dir: &Path) -> PathBuf {
    checkpoint::latest(dir).unwrap().1
}

fn final_state(dir: &Path) -> Vec<(String, Tensor)> {
    let (_, path) = checkpoint::latest(dir).unwrap();
    let mut t = Tensor::read_safetensors(path.join(checkpoint::STATE_FILE)).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

#[test]
fn training_reduces_loss_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(config(dir.path(), 50), dir.path().join("ckpt"));
    j.checkpoint_every = 20;
    let mut rec = Recorder::default();
    let out = train(&j, &mut rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Completed { final_loss } = out else { panic!("{out:?}") };
    let steps: Vec<u64> = rec.progress.iter().map(|p| p.step).collect();
    assert_eq!(steps, (0..=50).step_by(5).collect::<Vec<_>>());
    let initial = rec.progress[0].loss;
    assert!((initial - 259f64.ln()).abs() < 0.2, "initial loss {initial}");
    assert!(final_loss < initial - 2.0, "final {final_loss} vs initial {initial}");
    assert_eq!(rec.progress.last().unwrap().loss, final_loss);
    let last = rec.progress.last().unwrap();
    assert_eq!(last.tokens_seen, 50 * 8 * 32);
    assert!(last.tokens_per_second > 0.0 && last.grad_norm > 0.0);
    assert!((last.lr - 1e-3).abs() < 1e-12, "last update at the floor: {}", last.lr);
    assert_eq!(rec.progress[1].lr, 1e-2);
    // Periodic checkpoints at 20 and 40, the final one at 50; the newest two kept.
    let saved: Vec<u64> = rec.saved.iter().map(|c| c.step).collect();
    assert_eq!(saved, vec![20, 40, 50]);
    let kept: Vec<u64> = checkpoint::list(&j.checkpoint_dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, vec![40, 50]);
    let m = checkpoint::read_manifest(&rec.saved[2].path).unwrap();
    assert_eq!((m.step, m.optimizer_step, m.tokens_seen, m.run_id.as_str()), (50, 50, 12800, j.run_id.as_str()));
    // The held-out text is the training text: the eval loss has dropped too.
    let e = &heldout(dir.path(), &j.config, &rec.saved[2].path, Precision::Fp32);
    assert_eq!((e.distribution.as_str(), e.tokens), ("heldout", 256));
    assert!(e.loss < initial - 2.0, "{e:?}");
    let bytes_per_token = (20 * TEXT.len()) as f64 / (20 * (TEXT.len() + 1)) as f64;
    assert!((e.bytes - 256.0 * bytes_per_token).abs() < 1e-9);
    assert!((e.bits_per_byte - e.loss * 256.0 / std::f64::consts::LN_2 / e.bytes).abs() < 1e-9);
}

#[test]
fn stop_and_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 30);
    let full = job(cfg.clone(), dir.path().join("full"));
    let mut full_rec = Recorder::default();
    let out = train(&full, &mut full_rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Completed { final_loss } = out else { panic!("{out:?}") };
    let evals = heldout(dir.path(), &cfg, &final_ckpt(&full.checkpoint_dir), Precision::Fp32);

    // Stop through the hook at step 10.
    let mut part = job(cfg.clone(), dir.path().join("part"));
    part.checkpoint_every = 7;
    let mut rec = Recorder { stop_at: Some(10), ..Default::default() };
    let out = train(&part, &mut rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Stopped { step: 10, checkpoint } = out else { panic!("{out:?}") };
    assert_eq!(checkpoint.file_name().unwrap(), "step-00000010");
    assert_eq!(rec.saved.iter().map(|c| c.step).collect::<Vec<_>>(), vec![7, 10]);

    // Resume, then stop through the flag raised at step 20 (seen before step 21).
    part.resume_from = Some(checkpoint);
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let mut rec = Recorder { stop_at: Some(20), flag: Some(flag.clone()), ..Default::default() };
    let out = train(&part, &mut rec, &flag).unwrap();
    let TrainOutcome::Stopped { step: 20, checkpoint } = out else { panic!("{out:?}") };
    assert_eq!(rec.progress.first().unwrap().step, 15, "no step-0 point on resume");

    // Resume to the end.
    part.resume_from = Some(checkpoint);
    let mut rec = Recorder::default();
    let out = train(&part, &mut rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Completed { final_loss: resumed_loss } = out else { panic!("{out:?}") };
    assert_eq!(resumed_loss, final_loss);
    assert_eq!(heldout(dir.path(), &cfg, &final_ckpt(&part.checkpoint_dir), Precision::Fp32), evals);
    let last_full = full_rec.progress.last().unwrap();
    let last_part = rec.progress.last().unwrap();
    assert_eq!((last_part.step, last_part.loss, last_part.grad_norm), (30, last_full.loss, last_full.grad_norm));

    let (a, b) = (final_state(&full.checkpoint_dir), final_state(&part.checkpoint_dir));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }

    // Resuming a finished run trains nothing and completes with the same final train loss:
    // its last progress point, reported again (issue 12, defect 3: it scored the last batch
    // again, a third value beside the last progress point and the first attempt's note).
    part.resume_from = checkpoint::latest(&part.checkpoint_dir).map(|(_, p)| p);
    let mut rec = Recorder::default();
    let out = train(&part, &mut rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Completed { final_loss: again } = out else { panic!("{out:?}") };
    assert_eq!(again, final_loss);
    assert_eq!(rec.progress.len(), 1, "one point: the final one");
    assert_eq!(
        (rec.progress[0].step, rec.progress[0].loss, rec.progress[0].grad_norm),
        (30, last_full.loss, last_full.grad_norm)
    );

    // A checkpoint of another run is refused.
    let mut other = part.clone();
    other.run_id = "someone-else".into();
    let err = train(&other, &mut NoHooks, &AtomicBool::new(false)).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("someone-else"), "{err}");
}

/// bf16 mixed precision: the loss curve follows fp32's, checkpoints hold fp32 state, and a
/// stopped bf16 run resumes (from its fp32 checkpoint) to the same result as an
/// uninterrupted one, bit for bit.
#[test]
fn bf16_trains_like_fp32_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 50);
    let run = |precision: Precision, name: &str, stop_at: Option<u64>, resume_from: Option<PathBuf>| {
        let mut j = job(cfg.clone(), dir.path().join(name));
        j.precision = precision;
        j.resume_from = resume_from;
        let mut rec = Recorder { stop_at, ..Default::default() };
        let out = train(&j, &mut rec, &AtomicBool::new(false)).unwrap();
        (out, rec.progress, j.checkpoint_dir)
    };
    let (out32, p32, _) = run(Precision::Fp32, "fp32", None, None);
    let (out16, p16, dir16) = run(Precision::Bf16, "bf16", None, None);
    let TrainOutcome::Completed { final_loss: l32 } = out32 else { panic!("{out32:?}") };
    let TrainOutcome::Completed { final_loss: l16 } = out16 else { panic!("{out16:?}") };
    let e32 = [heldout(dir.path(), &cfg, &final_ckpt(&dir.path().join("fp32")), Precision::Fp32)];
    let e16 = [heldout(dir.path(), &cfg, &final_ckpt(&dir16), Precision::Bf16)];
    assert!(l16 < p16[0].loss - 2.0, "bf16 learns: {p16:?}");
    // Within 5%, or 0.02 nats once the (memorised) text's loss is near zero.
    let close = |a: f64, b: f64| (a - b).abs() < (0.05 * b).max(0.02);
    for (a, b) in p16.iter().zip(&p32) {
        println!("step {:>2}: loss fp32 {:.4} bf16 {:.4}", a.step, b.loss, a.loss);
        assert!(close(a.loss, b.loss), "step {}: bf16 {} vs fp32 {}", a.step, a.loss, b.loss);
    }
    assert!(close(l16, l32), "final loss bf16 {l16} vs fp32 {l32}");
    assert!(close(e16[0].loss, e32[0].loss), "{e16:?} vs {e32:?}");
    let state = final_state(&dir16);
    assert!(state.iter().all(|(_, t)| t.kind() == tch::Kind::Float), "checkpoints are fp32");

    let (stopped, _, part) = run(Precision::Bf16, "part", Some(20), None);
    let TrainOutcome::Stopped { step: 20, checkpoint } = stopped else { panic!("{stopped:?}") };
    let (out, p, _) = run(Precision::Bf16, "part", None, Some(checkpoint));
    let TrainOutcome::Completed { final_loss } = out else { panic!("{out:?}") };
    let evals = [heldout(dir.path(), &cfg, &final_ckpt(&part), Precision::Bf16)];
    assert_eq!((final_loss, &evals), (l16, &e16));
    assert_eq!(p.last().unwrap().grad_norm, p16.last().unwrap().grad_norm);
    for ((na, ta), (nb, tb)) in state.iter().zip(&final_state(&part)) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after a bf16 resume");
    }
    println!("loss after 50 steps: fp32 {l32:.4}, bf16 {l16:.4}; eval fp32 {:.4}, bf16 {:.4}", e32[0].loss, e16[0].loss);
}

#[test]
fn decay_scope_comes_from_the_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 10);
    cfg.recipe.weight_decay = 0.5;
    let norms = |cfg: &RunConfig, name: &str| {
        let j = job(cfg.clone(), dir.path().join(name));
        train(&j, &mut NoHooks, &AtomicBool::new(false)).unwrap();
        final_state(&j.checkpoint_dir)
    };
    assert_eq!(AdamWConfig::from_recipe(&cfg.recipe).decay_scope, crate::optim::DecayScope::default());
    let plain = norms(&cfg, "plain");
    cfg.recipe.decay_norms = true;
    cfg.recipe.decay_embeddings = true;
    let scope = AdamWConfig::from_recipe(&cfg.recipe).decay_scope;
    assert!(scope.norms && scope.embeddings);
    let decayed = norms(&cfg, "decayed");
    // The scope reaches the optimiser of a run: the norm weights and the embedding now
    // feel the decay (their values change; everything else changes through them).
    for ((name, a), (_, b)) in plain.iter().zip(&decayed) {
        if name.starts_with("param/") && (name.contains("norm") || name.contains("embed")) {
            assert!(!a.equal(b), "{name} should feel the decay");
        }
    }
}

#[test]
fn stop_flag_before_first_step_checkpoints_step_zero() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(config(dir.path(), 10), dir.path().join("ckpt"));
    let mut rec = Recorder::default();
    let out = train(&j, &mut rec, &AtomicBool::new(true)).unwrap();
    let TrainOutcome::Stopped { step: 0, checkpoint } = out else { panic!("{out:?}") };
    assert!(rec.progress.is_empty());
    assert_eq!(checkpoint::read_manifest(&checkpoint).unwrap().optimizer_step, 0);
}

#[test]
fn divergence_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 40);
    cfg.recipe.lr = 1e30;
    cfg.recipe.warmup_frac = 0.0;
    cfg.recipe.grad_clip = 0.0;
    let mut j = job(cfg, dir.path().join("ckpt"));
    j.checkpoint_every = 1;
    let out = train(&j, &mut NoHooks, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Diverged { step, loss } = out else { panic!("{out:?}") };
    assert!(!loss.is_finite() && step > 0 && step < 40, "{step} {loss}");
    // No checkpoint of the diverged model was written.
    let (last, _) = checkpoint::latest(&j.checkpoint_dir).unwrap();
    assert_eq!(last, step - 1);
}

#[test]
fn cautious_and_scheduled_decay_train() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 30);
    cfg.recipe.cautious = true;
    cfg.recipe.wd_schedule = true;
    let mut rec = Recorder::default();
    let out = train(&job(cfg.clone(), dir.path().join("ckpt")), &mut rec, &AtomicBool::new(false)).unwrap();
    let TrainOutcome::Completed { final_loss, .. } = out else { panic!("{out:?}") };
    assert!(final_loss < rec.progress[0].loss - 1.0, "{final_loss}");
    // The options are part of the recipe's identity only when set.
    let json = serde_json::to_value(&cfg.recipe).unwrap();
    assert_eq!((json["cautious"].as_bool(), json["wd_schedule"].as_bool()), (Some(true), Some(true)));
    cfg.recipe.cautious = false;
    cfg.recipe.wd_schedule = false;
    let json = serde_json::to_string(&cfg.recipe).unwrap();
    assert!(!json.contains("cautious") && !json.contains("wd_schedule"), "{json}");
    assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), cfg.recipe);
}

#[test]
fn sustained_blow_up_is_divergence() {
    let mut w = BlowUpWatch::new(10);
    // Windows inside the warmup never count, however high.
    assert!(!w.observe(5, 100.0) && !w.observe(10, 100.0));
    assert!(!w.observe(15, 3.0) && !w.observe(20, 2.0));
    // Two windows above 2x the best (2.0), then a recovery: the count restarts.
    assert!(!w.observe(25, 4.5) && !w.observe(30, 5.0) && !w.observe(35, 3.9));
    assert!(!w.observe(40, 4.1) && !w.observe(45, 4.2));
    assert!(w.observe(50, 4.3), "third consecutive window above 2x the best");
    // A slow drift below the threshold never trips it.
    let mut w = BlowUpWatch::new(0);
    assert!((1..100).all(|s| !w.observe(s, 1.0 + s as f64 / 100.0)));
}

#[test]
fn bad_data_is_a_user_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), 10);
    let run = |cfg: RunConfig| train(&job(cfg, dir.path().join("ckpt")), &mut NoHooks, &AtomicBool::new(false));

    let mut cfg = good.clone();
    cfg.data.train.digest = "00".repeat(32);
    let err = run(cfg).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("train.bin"), "{err}");

    let mut cfg = good.clone();
    cfg.data.train.path = dir.path().join("missing.bin").to_string_lossy().into_owned();
    let err = run(cfg).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("missing.bin"), "{err}");

    let mut cfg = good.clone();
    cfg.model.vocab_size = 100;
    let err = run(cfg).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("train.bin"), "{err}");

    let mut cfg = good.clone();
    cfg.model.seq_len = 1_000_000;
    let err = run(cfg).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("train.bin"), "{err}");

    let mut cfg = good;
    cfg.model.heads = 5;
    assert!(run(cfg).unwrap_err().is_user_error());

    let torch = TrainError::from(TchError::Torch("boom".into()));
    assert!(!torch.is_user_error());
    assert_eq!(torch.class(), FailureClass::Unknown);
    assert_eq!(TrainError::Config("x".into()).class(), FailureClass::UserError);
}

/// Gradient accumulation over micro-batches computes the whole batch's gradient, and the
/// update follows from it.
///
/// What is claimed, and so what is tested: the accumulated gradient equals the whole
/// batch's up to the rounding of reordered fp32 sums, and AdamW's update of every element
/// whose gradient is well determined is the same. Parameters are not compared wholesale:
/// Adam's first update is about `lr · sign(g)`, so an element whose gradient is within
/// rounding of zero may move either way, by an amount that depends on the CPU's kernels.
#[test]
fn micro_batches_match_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1);
    // The batch each run sees, and its loss, do not depend on the micro-batch; so the
    // progress point says which micro-batch trained it.
    let progress = |micro: usize, name: &str| {
        let mut j = job(cfg.clone(), dir.path().join(name));
        j.micro_batch = micro;
        let mut rec = Recorder::default();
        let out = train(&j, &mut rec, &AtomicBool::new(false)).unwrap();
        assert!(matches!(out, TrainOutcome::Completed { .. }), "{out:?}");
        rec.progress[0].clone()
    };
    let whole_p = progress(0, "whole");
    assert_eq!(whole_p.micro_batch, Some(8));
    for micro in [4, 3, 1] {
        let p = progress(micro, &format!("micro-{micro}"));
        assert_eq!(p.micro_batch, Some(micro as u64));
        assert!((p.loss - whole_p.loss).abs() <= 1e-5 * whole_p.loss, "micro-batch {micro}: {p:?} vs {whole_p:?}");
    }

    // One step from the same initialisation, with the optimiser's buffers in view.
    let shard = Shard::open(&cfg.data.train.path).unwrap();
    let (batch, seq) = (cfg.recipe.batch as usize, cfg.model.seq_len as usize);
    let b = BatchSampler::new(&shard, batch, seq, cfg.seed).unwrap().batch(0, Device::Cpu).unwrap();
    let lr = cfg.recipe.lr;
    let step = |micro: usize| {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Transformer::seeded(&vs.root(), &cfg.model, cfg.seed).unwrap();
        let mut opt_cfg = AdamWConfig::from_recipe(&cfg.recipe);
        opt_cfg.grad_clip = 0.0; // clipping rescales by the (rounded) norm; not the claim here
        let mut opt = AdamW::new(model.params(), opt_cfg).unwrap();
        let loss = accumulate_grads(&model, &mut opt, &b.inputs, &b.targets, micro).unwrap().double_value(&[]);
        let g = opt.flat_grads().unwrap().to_kind(tch::Kind::Double);
        let before = opt.flat_masters().unwrap().to_kind(tch::Kind::Double);
        let _ = opt.step(lr).unwrap();
        let moved = opt.flat_masters().unwrap().to_kind(tch::Kind::Double) - before;
        (loss, g, moved)
    };
    let (loss, g, moved) = step(batch);
    let g_norm = g.norm().double_value(&[]);
    let eps = cfg.recipe.eps;
    for micro in [4, 3, 1] {
        let (l, gm, mm) = step(micro);
        assert!((l - loss).abs() <= 1e-5 * loss, "micro-batch {micro}: loss {l} vs {loss}");
        // Each gradient element is a sum over the batch's 8 x 32 token positions; summed in
        // another order, fp32 gives it to about 256 x 2^-24 = 1.5e-5 of the sum of the
        // magnitudes at worst. A wrong weighting of one micro-batch would be off by ~10%.
        let dg = (&gm - &g).abs();
        let rel = dg.norm().double_value(&[]) / g_norm;
        assert!(rel <= 1e-4, "micro-batch {micro}: gradient differs by {rel:e} of its norm");
        // Well-determined elements: the gradient known to 1% and well above AdamW's eps.
        // For them the update lr·g/(|g|+eps) is the same to 1e-4 lr (bound: eps·|dg|/g²),
        // plus the rounding of the parameters themselves (an ulp of the norm weights, 1.0).
        let sure = dg.le_tensor(&(g.abs() * 0.01)).logical_and(&g.abs().ge(100.0 * eps));
        let n_sure = sure.sum(tch::Kind::Int64).int64_value(&[]);
        let n_nonzero = g.abs().ge(100.0 * eps).sum(tch::Kind::Int64).int64_value(&[]);
        let worst = (&mm - &moved).abs().masked_select(&sure).max().double_value(&[]);
        println!(
            "micro-batch {micro}: gradient within {rel:.1e} of the whole batch's; {n_sure} of {n_nonzero} \
             non-zero gradient elements well determined, their updates within {:.1e} lr",
            worst / lr
        );
        assert!(n_sure as f64 >= 0.9 * n_nonzero as f64, "micro-batch {micro}: {n_sure} of {n_nonzero}");
        assert!(
            worst <= 1e-4 * lr + f64::from(f32::EPSILON),
            "micro-batch {micro}: a well-determined update differs by {worst:e}"
        );
    }
}

#[test]
fn oom_halves_the_micro_batch_and_retries() {
    let oom = || TchError::Torch("CUDA out of memory. Tried to allocate 2.00 GiB".into());
    // Fails twice with OOM, then succeeds at 2.
    let mut micro = 8;
    let mut tried = vec![];
    let mut notes = vec![];
    let out = with_oom_retry(
        &mut micro,
        |m| {
            tried.push(m);
            if m > 2 { Err(oom()) } else { Ok(m * 10) }
        },
        |old, new| notes.push((old, new)),
    );
    assert_eq!(out.unwrap(), 20);
    assert_eq!((micro, tried, notes), (2, vec![8, 4, 2], vec![(8, 4), (4, 2)]));
    // Odd sizes halve down to 1, then the error is returned.
    let mut micro = 3;
    let mut tried = vec![];
    let err = with_oom_retry(
        &mut micro,
        |m| -> Result<(), TchError> {
            tried.push(m);
            Err(oom())
        },
        |_, _| {},
    )
    .unwrap_err();
    assert!(is_oom(&err) && micro == 1 && tried == vec![3, 1], "{err} {micro} {tried:?}");
    // Other errors are not retried.
    let mut micro = 8;
    let err =
        with_oom_retry(&mut micro, |_| -> Result<(), TchError> { Err(TchError::Torch("boom".into())) }, |_, _| {}).unwrap_err();
    assert!(!is_oom(&err) && micro == 8);
    // At the boundary an out-of-memory error becomes a typed error of class `oom`.
    for msg in ["CUDA out of memory. Tried to allocate 2.00 GiB", "DefaultCPUAllocator: can't allocate memory: you tried"] {
        let e = TrainError::from(TchError::Torch(msg.into()));
        assert!(matches!(e, TrainError::OutOfMemory(_)) && e.class() == FailureClass::Oom, "{e}");
    }
}
