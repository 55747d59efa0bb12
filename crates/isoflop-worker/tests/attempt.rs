//! The attempt loop against a coordinator played by a recording client: real training of a
//! tiny model on a real shard, no process and no network.

use isoflop_core::eval::{EvalJobConfig, EvalTask, TaskKind, TextTask};
use isoflop_core::{DataRef, EvalRef, ModelShape, Recipe, RunConfig, Tokenizer};
use isoflop_data::ShardWriter;
use isoflop_proto::v1 as pb;
use isoflop_worker::{Attempt, Ended, Options, WorkerClient, WorkerError, run_attempt};
use std::path::Path;
use tokio_util::sync::CancellationToken;
use tonic::Status;

const TEXT: &str = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! ";

fn shard(dir: &Path, name: &str) -> EvalRef {
    let path = dir.join(format!("{name}.bin"));
    let mut w = ShardWriter::create(&path, 259).unwrap();
    for _ in 0..100 {
        let mut toks: Vec<u32> = TEXT.bytes().map(u32::from).collect();
        toks.push(256);
        w.push_document(&toks, TEXT.len() as u64).unwrap();
    }
    let h = w.finish().unwrap();
    EvalRef { name: name.into(), path: path.display().to_string(), digest: h.digest }
}

fn config(dir: &Path, steps: u64) -> RunConfig {
    RunConfig {
        model: ModelShape {
            vocab_size: 259,
            hidden: 16,
            layers: 1,
            heads: 2,
            kv_heads: 2,
            ffn_hidden: 32,
            seq_len: 16,
            rope_theta: 10000.0,
            rope_scaling: None,
            qk_norm: true,
            tie_embeddings: false,
            norm_eps: 1e-5,
            init_std: 0.02,
        },
        recipe: Recipe {
            batch: 4,
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
        data: DataRef { tokenizer: Tokenizer::Byte, train: shard(dir, "train") },
        seed: 3,
    }
}

/// The coordinator, played back: it records every call and answers as told.
#[derive(Default)]
struct Coordinator {
    assignment: pb::AttachResponse,
    reports: Vec<pb::ReportRequest>,
    finished: Vec<pb::FinishRequest>,
    /// Ask the worker to stop once a report carried a progress point past step 0.
    stop_once_training: bool,
    /// Answer reports with this refusal.
    revoke: Option<Status>,
    /// Answer every report UNAVAILABLE, as a coordinator that died does.
    reports_unavailable: bool,
    /// Answer finish with this refusal.
    refuse_finish: Option<Status>,
    /// Answer the first so many calls of each kind UNAVAILABLE, as a coordinator whose store
    /// fails (a full disk) does.
    store_failures: usize,
    failed: std::collections::HashMap<&'static str, usize>,
}

impl Coordinator {
    fn store_fails(&mut self, call: &'static str) -> Result<(), Status> {
        let n = self.failed.entry(call).or_default();
        if *n < self.store_failures {
            *n += 1;
            return Err(Status::unavailable("the coordinator's store failed (retry): database or disk is full"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl WorkerClient for Coordinator {
    async fn attach(&mut self, req: pb::AttachRequest) -> Result<pb::AttachResponse, Status> {
        assert_eq!(req.protocol_version, isoflop_proto::PROTOCOL_VERSION);
        self.store_fails("attach")?;
        Ok(self.assignment.clone())
    }
    async fn report(&mut self, req: pb::ReportRequest) -> Result<pb::ReportResponse, Status> {
        if let Some(s) = &self.revoke {
            return Err(s.clone());
        }
        if self.reports_unavailable {
            return Err(Status::unavailable("transport error: connection refused"));
        }
        self.store_fails("report")?;
        self.reports.push(req);
        let training = self.reports.iter().flat_map(|r| &r.progress).any(|p| p.step > 0);
        Ok(pb::ReportResponse { stop: self.stop_once_training && training })
    }
    async fn finish(&mut self, req: pb::FinishRequest) -> Result<pb::FinishResponse, Status> {
        self.store_fails("finish")?;
        self.finished.push(req);
        match &self.refuse_finish {
            Some(s) => Err(s.clone()),
            None => Ok(pb::FinishResponse {}),
        }
    }
}

fn coordinator(dir: &Path, cfg: &RunConfig) -> Coordinator {
    Coordinator {
        assignment: pb::AttachResponse {
            protocol_version: isoflop_proto::PROTOCOL_VERSION,
            run_config_json: serde_json::to_string(cfg).unwrap(),
            checkpoint_dir: dir.join("ckpt").display().to_string(),
            checkpoint_every: 0,
            progress_every: 5,
            threads: 1,
            device: "cpu".into(),
            lease_seconds: 3,
            store_id: "store-a".into(),
            ..pb::AttachResponse::default()
        },
        ..Coordinator::default()
    }
}

fn who(cfg: &RunConfig) -> Attempt {
    Attempt { run_id: cfg.run_id().0, attempt: 1 }
}

fn outcome(c: &Coordinator) -> &pb::finish_request::Outcome {
    assert_eq!(c.finished.len(), 1, "one outcome");
    c.finished[0].outcome.as_ref().unwrap()
}

#[tokio::test]
async fn a_completed_attempt_reports_progress_and_its_checkpoints_then_an_evaluation_job_scores_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 20);
    let mut c = coordinator(dir.path(), &cfg);
    c.assignment.keep_steps = vec![7];
    let ended = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    let steps: Vec<u64> = c.reports.iter().flat_map(|r| &r.progress).map(|p| p.step).collect();
    assert_eq!(steps, [0, 5, 10, 15, 20], "every progress point reaches the coordinator once");
    assert!(c.reports.iter().flat_map(|r| &r.progress).all(|p| p.micro_batch == Some(4) && p.mfu == 0.0));
    assert_eq!(c.reports[0].resumed_from, Some(0), "the first report says where it resumed from");
    assert!(c.reports[1..].iter().all(|r| r.resumed_from.is_none()));
    let ckpts: Vec<(u64, String)> = c.reports.iter().flat_map(|r| &r.checkpoints).map(|c| (c.step, c.path.clone())).collect();
    assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), [7, 20], "the kept step and the final checkpoint");
    assert!(ckpts.iter().all(|(_, p)| Path::new(p).join("state.safetensors").is_file()), "both stay on disk");
    let pb::finish_request::Outcome::Success(s) = outcome(&c) else { panic!("{:?}", c.finished) };
    assert!(s.final_loss < 259f64.ln() && s.evals.is_empty() && s.metrics.is_empty(), "{s:?}");

    // An evaluation job on each checkpoint: the held-out text, then with the first 30 tokens
    // of every document left out of the score.
    let heldout = shard(dir.path(), "heldout");
    let mut bpb = Vec::new();
    for (step, path) in &ckpts {
        for skip in [0, 30] {
            let text = TextTask { distributions: vec![heldout.clone()], tokens: 256, skip_tokens: skip };
            let job = EvalJobConfig {
                run: cfg.run_id(),
                step: *step,
                task: EvalTask { name: "heldout".into(), kind: TaskKind::Text(text) },
            };
            let mut e = coordinator(dir.path(), &cfg);
            e.assignment.run_config_json = serde_json::to_string(&job).unwrap();
            e.assignment.checkpoint_dir.clear();
            e.assignment.eval =
                Some(pb::EvalAssignment { run_config_json: serde_json::to_string(&cfg).unwrap(), checkpoint: path.clone() });
            let who = Attempt { run_id: job.job_id().0, attempt: 1 };
            assert_eq!(run_attempt(&mut e, &who, &Options::default(), CancellationToken::new()).await.unwrap(), Ended::Succeeded);
            let pb::finish_request::Outcome::Success(s) = outcome(&e) else { panic!("{:?}", e.finished) };
            let m = |name: &str| s.metrics.iter().find(|m| m.subset == "heldout" && m.metric == name).unwrap().value;
            // 256 tokens: 16 windows of 16 predictions; documents are 88 tokens long, so the
            // first 30 positions of each are left out where they fall in the windows.
            let scored = (1..=256).filter(|p| (p % 88) as u64 >= skip).count() as f64;
            assert_eq!(m("tokens"), scored, "step {step} skip {skip}");
            assert!(m("loss") > 0.0 && m("loss") < 259f64.ln(), "{s:?}");
            assert!((m("bpb") - m("loss") * m("tokens") / std::f64::consts::LN_2 / m("bytes")).abs() < 1e-9);
            let done: Vec<(u64, u64)> = e.reports.iter().flat_map(|r| &r.progress).map(|p| (p.step, p.total_steps)).collect();
            assert_eq!(done.last(), Some(&(16, 16)), "progress counts scored windows: {done:?}");
            if skip == 0 {
                bpb.push(m("bpb"));
            }
        }
    }
    assert!(bpb[1] < bpb[0], "the final checkpoint scores better than step 7: {bpb:?}");
    // A job whose checkpoint is another run's is refused as a user error.
    let job = EvalJobConfig {
        run: isoflop_core::RunId("0123456789abcdef".into()),
        step: 20,
        task: EvalTask {
            name: "heldout".into(),
            kind: TaskKind::Text(TextTask { distributions: vec![heldout], tokens: 256, skip_tokens: 0 }),
        },
    };
    let mut e = coordinator(dir.path(), &cfg);
    e.assignment.run_config_json = serde_json::to_string(&job).unwrap();
    e.assignment.eval =
        Some(pb::EvalAssignment { run_config_json: serde_json::to_string(&cfg).unwrap(), checkpoint: ckpts[1].1.clone() });
    let err = run_attempt(&mut e, &Attempt { run_id: job.job_id().0, attempt: 1 }, &Options::default(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not run 0123456789abcdef"), "{err}");
}

/// A store that fails for a while (UNAVAILABLE: a full disk, a lost database connection) is
/// retried: the attempt attaches, every progress point and the outcome arrive once, nothing
/// is lost and nothing is revoked.
#[tokio::test]
async fn store_failures_are_retried_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 20);
    let mut c = coordinator(dir.path(), &cfg);
    c.store_failures = 2;
    let ended = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    assert_eq!(c.failed.values().sum::<usize>(), 6, "two failures of each call: {:?}", c.failed);
    let steps: Vec<u64> = c.reports.iter().flat_map(|r| &r.progress).map(|p| p.step).collect();
    assert_eq!(steps, [0, 5, 10, 15, 20], "every progress point, once");
    assert!(matches!(outcome(&c), pb::finish_request::Outcome::Success(_)));
}

#[tokio::test]
async fn a_stop_request_checkpoints_and_finishes_interrupted_with_the_tokens_seen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000_000);
    let mut c = coordinator(dir.path(), &cfg);
    c.stop_once_training = true;
    c.assignment.progress_every = 1;
    let Ended::Interrupted { step } =
        run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap()
    else {
        panic!("{:?}", c.finished)
    };
    assert!(step > 0);
    let pb::finish_request::Outcome::Interrupted(i) = outcome(&c) else { panic!() };
    assert_eq!((i.checkpoint_step, i.tokens_seen), (step, step * 4 * 16), "the checkpoint keeps its real token count");
    assert!(Path::new(&i.checkpoint_path).join("manifest.json").is_file(), "{}", i.checkpoint_path);
}

#[tokio::test]
async fn an_interrupt_before_training_checkpoints_step_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000_000);
    let mut c = coordinator(dir.path(), &cfg);
    let interrupt = CancellationToken::new();
    interrupt.cancel();
    let ended = run_attempt(&mut c, &who(&cfg), &Options::default(), interrupt).await.unwrap();
    assert_eq!(ended, Ended::Interrupted { step: 0 });
}

#[tokio::test]
async fn a_revoked_attempt_stops_and_sends_no_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000_000);
    let mut c = coordinator(dir.path(), &cfg);
    c.revoke = Some(Status::aborted("run x attempt 1 has ended (cancelled)"));
    let err = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, WorkerError::Revoked { message, .. } if message.contains("cancelled")), "{err}");
    assert!(c.finished.is_empty(), "a revoked attempt's outcome is not sent");
}

#[tokio::test]
async fn a_bad_assignment_is_a_user_error_told_to_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 5);
    let mut c = coordinator(dir.path(), &cfg);
    c.assignment.device = "gpu".into();
    let err = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, WorkerError::BadAssignment(m) if m.contains("expected cpu, cuda or cuda:N")), "{err}");
    let pb::finish_request::Outcome::Failure(f) = outcome(&c) else { panic!() };
    assert_eq!(f.class, pb::FailureClass::UserError as i32);
    // A configuration that is not the run's is refused the same way.
    let mut c = coordinator(dir.path(), &cfg);
    let err = run_attempt(
        &mut c,
        &Attempt { run_id: "0000000000000000".into(), attempt: 1 },
        &Options::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not run 0000000000000000"), "{err}");
}

#[tokio::test]
async fn a_training_error_is_classified_and_a_refused_outcome_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 5);
    cfg.data.train.digest = "00".repeat(32);
    let mut c = coordinator(dir.path(), &cfg);
    c.refuse_finish = Some(Status::aborted("run x attempt 1 has ended (no longer active)"));
    let err = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, WorkerError::FinishRefused(m) if m.contains("has ended")), "{err}");
    let pb::finish_request::Outcome::Failure(f) = outcome(&c) else { panic!() };
    assert_eq!(f.class, pb::FailureClass::UserError as i32, "a digest mismatch is the run's data: {}", f.message);
    assert!(f.message.contains("train.bin"), "{}", f.message);
}

/// Regression (found by the k8s fault test): the final checkpoint was written, then the
/// coordinator died before recording it. The next attempt resumes from it on disk and finishes
/// at once; it must report it, or the run succeeds without the checkpoint row its evaluation
/// jobs wait for (and the sweep never settles).
#[tokio::test]
async fn a_checkpoint_on_disk_the_store_never_recorded_is_reported_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10);
    let mut first = coordinator(dir.path(), &cfg);
    assert_eq!(
        run_attempt(&mut first, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap(),
        Ended::Succeeded
    );
    // A new attempt whose coordinator knows no checkpoint (nothing was recorded).
    let mut again = coordinator(dir.path(), &cfg);
    let second = Attempt { run_id: cfg.run_id().0, attempt: 2 };
    let ended = run_attempt(&mut again, &second, &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    assert_eq!(again.reports[0].resumed_from, Some(10));
    let reported: Vec<(u64, u64)> = again.reports.iter().flat_map(|r| &r.checkpoints).map(|c| (c.step, c.tokens_seen)).collect();
    assert_eq!(reported, [(10, cfg.tokens_at(10))], "the checkpoint it resumed from is recorded");

    // Another store's attempt over the same directory does not adopt it (issue 12, defect 4):
    // it trains from step 0.
    let mut other = coordinator(dir.path(), &cfg);
    other.assignment.store_id = "store-b".into();
    let ended = run_attempt(&mut other, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    assert_eq!(other.reports[0].resumed_from, Some(0));
    let first = other.reports.iter().flat_map(|r| &r.progress).next().map(|p| p.step);
    assert_eq!(first, Some(0), "trained from the start");
}

/// Issue 13, point 6: a truncated newest checkpoint (the one the store names) is set aside,
/// the attempt resumes from the one before and its first report says which it rejected and
/// where it resumed; with every checkpoint damaged it starts from scratch. Never a crash loop.
#[tokio::test]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    use isoflop_train::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 20);
    let mut first = coordinator(dir.path(), &cfg);
    first.assignment.checkpoint_every = 5;
    assert_eq!(
        run_attempt(&mut first, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap(),
        Ended::Succeeded
    );
    let ckpt_dir = dir.path().join("ckpt");
    let steps = |d: &Path| checkpoint::list(d).into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(steps(&ckpt_dir), [15, 20]);
    let newest = ckpt_dir.join(checkpoint::dir_name(20));
    let state = newest.join(checkpoint::STATE_FILE);
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&state).unwrap().set_len(len / 3).unwrap();

    let mut again = coordinator(dir.path(), &cfg);
    again.assignment.checkpoint_every = 5;
    again.assignment.resume_checkpoint = newest.display().to_string();
    again.assignment.resume_step = 20;
    let second = Attempt { run_id: cfg.run_id().0, attempt: 2 };
    let ended = run_attempt(&mut again, &second, &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    let r0 = &again.reports[0];
    assert_eq!(r0.resumed_from, Some(15));
    assert_eq!(r0.rejected_checkpoints.len(), 1, "{:?}", r0.rejected_checkpoints);
    let rej = &r0.rejected_checkpoints[0];
    assert_eq!((rej.step, rej.path.as_str()), (20, newest.to_str().unwrap()));
    assert!(rej.reason.contains("bytes"), "{}", rej.reason);
    assert!(again.reports[1..].iter().all(|r| r.rejected_checkpoints.is_empty()), "sent once");
    let trained: Vec<u64> = again.reports.iter().flat_map(|r| &r.progress).map(|p| p.step).collect();
    assert_eq!(trained.first(), Some(&20), "steps 16-20 retrained, from step 15: {trained:?}");
    let saved: Vec<u64> = again.reports.iter().flat_map(|r| &r.checkpoints).map(|c| c.step).collect();
    assert_eq!(saved, [15, 20], "the fallback is recorded, then the retrained final checkpoint");
    assert_eq!(steps(&ckpt_dir), [15, 20]);
    checkpoint::verify(&newest).expect("the retrained final checkpoint is sound");
    assert!(!ckpt_dir.join("step-00000020.corrupt").exists(), "the damaged copy is gone after the next save");

    // Every checkpoint damaged (a flipped byte in each): from scratch, both rejected.
    for (_, path) in checkpoint::list(&ckpt_dir) {
        let state = path.join(checkpoint::STATE_FILE);
        let mut bytes = std::fs::read(&state).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 1;
        std::fs::write(&state, bytes).unwrap();
    }
    let mut third = coordinator(dir.path(), &cfg);
    let ended =
        run_attempt(&mut third, &Attempt { attempt: 3, ..second }, &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    assert_eq!(third.reports[0].resumed_from, Some(0));
    let rejected: Vec<u64> = third.reports[0].rejected_checkpoints.iter().map(|r| r.step).collect();
    assert_eq!(rejected, [20, 15]);
    assert!(third.reports[0].rejected_checkpoints.iter().all(|r| r.reason.contains("SHA-256")));
}

/// Found by the chaos drill (one truncated checkpoint in nine left no event): an attempt that
/// set a damaged checkpoint aside but never got a report taken (its coordinator died) deleted
/// it at its next save and left the next attempt nothing to find. It is kept until reported,
/// and the next attempt reports it.
#[tokio::test]
async fn a_checkpoint_set_aside_by_an_attempt_that_never_reported_is_reported_by_the_next() {
    use isoflop_train::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 20);
    let mut first = coordinator(dir.path(), &cfg);
    first.assignment.checkpoint_every = 5;
    run_attempt(&mut first, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap();
    let ckpt_dir = dir.path().join("ckpt");
    let newest = ckpt_dir.join(checkpoint::dir_name(20));
    let state = newest.join(checkpoint::STATE_FILE);
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&state).unwrap().set_len(len / 2).unwrap();

    // Attempt 2 sets it aside, retrains steps 16-20 and saves (a save deleted set-aside
    // checkpoints), but its coordinator is gone: no report is taken.
    let mut lost = coordinator(dir.path(), &cfg);
    lost.assignment.checkpoint_every = 5;
    lost.reports_unavailable = true;
    let second = Attempt { run_id: cfg.run_id().0, attempt: 2 };
    run_attempt(&mut lost, &second, &Options::default(), CancellationToken::new()).await.unwrap();
    assert!(lost.reports.is_empty(), "no report was taken");
    let kept = checkpoint::set_aside_in(&ckpt_dir);
    assert_eq!(kept.iter().map(|k| (k.step, k.reported)).collect::<Vec<_>>(), [(20, false)], "kept by the save");

    let mut next = coordinator(dir.path(), &cfg);
    let ended =
        run_attempt(&mut next, &Attempt { attempt: 3, ..second }, &Options::default(), CancellationToken::new()).await.unwrap();
    assert_eq!(ended, Ended::Succeeded);
    let r0 = &next.reports[0];
    assert_eq!(r0.resumed_from, Some(20), "from attempt 2's sound step 20");
    let rejected: Vec<(u64, &str)> = r0.rejected_checkpoints.iter().map(|r| (r.step, r.path.as_str())).collect();
    assert_eq!(rejected, [(20, newest.to_str().unwrap())]);
    assert!(r0.rejected_checkpoints[0].reason.contains("bytes"), "the first attempt's reason: {:?}", r0.rejected_checkpoints);
    assert!(next.reports[1..].iter().all(|r| r.rejected_checkpoints.is_empty()), "sent once");
    assert!(checkpoint::set_aside_in(&ckpt_dir).iter().all(|k| k.reported), "marked once taken");
    // The store drops the step's row for the rejection; the sound save attempt 3 resumed from
    // is recorded in the same report or a later one, so its evaluation jobs find it.
    let again =
        next.reports.iter().position(|r| r.checkpoints.iter().any(|c| c.step == 20 && c.path == newest.to_str().unwrap()));
    assert!(again.is_some(), "the resume checkpoint is reported");
}

/// Issue 13 (defect: two workers on one run): while an older worker of the run (here the test,
/// as an orphan nobody could signal) holds the run directory's lock, a new attempt waits,
/// heartbeating, and trains only once the lock is free.
#[tokio::test]
async fn a_second_worker_waits_for_the_first_to_release_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 10);
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ckpt.join(isoflop_worker::RUN_LOCK_FILE))
        .unwrap();
    lock.try_lock().unwrap();
    std::fs::write(ckpt.join(isoflop_worker::RUN_LOCK_FILE), "pid 1 on orphan-host").unwrap();
    let held = std::time::Duration::from_millis(2500);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(held);
        drop(lock);
    });
    let mut c = coordinator(dir.path(), &cfg);
    let t0 = std::time::Instant::now();
    let ended = run_attempt(&mut c, &who(&cfg), &Options::default(), CancellationToken::new()).await.unwrap();
    releaser.join().unwrap();
    assert_eq!(ended, Ended::Succeeded);
    assert!(t0.elapsed() >= held, "it did not wait: {:?}", t0.elapsed());
    let first_work = c.reports.iter().position(|r| r.resumed_from.is_some()).unwrap();
    assert!(first_work >= 2, "heartbeats while waiting: {first_work}");
    assert!(c.reports[..first_work].iter().all(|r| r.progress.is_empty() && r.checkpoints.is_empty()));
    let holder = std::fs::read_to_string(ckpt.join(isoflop_worker::RUN_LOCK_FILE)).unwrap();
    assert_eq!(holder, format!("pid {} on {}", std::process::id(), hostname()), "it names itself once it holds it");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
