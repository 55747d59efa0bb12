//! The coordinator over real gRPC on loopback: the control API (submit, get, list, watch,
//! cancel, resume) and the worker protocol (token, protocol version, attach, report, finish),
//! with a recording executor standing in for worker processes (scheduler test only; the real
//! worker is exercised by the end-to-end tests).

use isoflop_coordinator::executor::ExecutorError;
use isoflop_coordinator::{Coordinator, CoordinatorConfig, Executor, LaunchSpec, serve};
use isoflop_core::spec::SweepSpec;
use isoflop_data::prepare::{Manifest, ShardEntry};
use isoflop_data::{ShardWriter, shard::ShardHeader};
use isoflop_proto::PROTOCOL_VERSION;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::control_service_client::ControlServiceClient;
use isoflop_proto::v1::worker_service_client::WorkerServiceClient;
use isoflop_store::{SqliteStore, Store};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

/// Records launches instead of starting processes.
#[derive(Default)]
struct Recorder {
    launched: Mutex<Vec<LaunchSpec>>,
    stopped: Mutex<Vec<(String, u64)>>,
}

#[async_trait::async_trait]
impl Executor for Recorder {
    fn slots(&self) -> usize {
        2
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
        self.launched.lock().unwrap().push(spec.clone());
        Ok(format!("test:{}", spec.run_id))
    }
    fn stop(&self, run_id: &str, attempt: u64) {
        self.stopped.lock().unwrap().push((run_id.into(), attempt));
    }
    fn kill(&self, _: &str, _: u64) {}
    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool {
        self.launched.lock().unwrap().iter().any(|l| l.run_id == run_id && l.attempt == attempt)
    }
    fn stop_orphan(&self, _: &isoflop_coordinator::executor::Orphan<'_>) {}
}

fn shard(dir: &Path, name: &str) -> ShardEntry {
    let path = dir.join(format!("{name}.bin"));
    let mut w = ShardWriter::create(&path, 259).unwrap();
    let tokens: Vec<u32> = (0..4000u32).map(|i| i % 200).collect();
    w.push_document(&tokens, 4000).unwrap();
    let h: ShardHeader = w.finish().unwrap();
    ShardEntry { name: name.into(), path: format!("{name}.bin"), digest: h.digest, tokens: 4000, bytes: 4000, documents: 1 }
}

fn write_corpus(dir: &Path) {
    let m = Manifest {
        format: 1,
        tokenizer: isoflop_core::Tokenizer::Byte,
        vocab_size: 259,
        train: shard(dir, "train"),
        evals: vec![shard(dir, "code"), shard(dir, "prose")],
        sources: vec![],
        fingerprint: String::new(),
    };
    m.save(dir.join("manifest.json")).unwrap();
}

const SPEC: &str = "\
name: grpc
budgets: [1.5e9, 3.0e9]
model: {family: llama, seq_len: 32}
grid:
  hidden: [16, 32]
  layers: {fixed: 1}
  heads: {head_size: 16}
  fixed_batch: 8
  lr_constant: 0.1
  lr_max: 0.01
  flop_tolerance: 0.05
recipe: {warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0}
data: {tokenizer: byte, manifest: manifest.json, corpora: [{name: mix}]}
executor: {kind: local, max_parallel: 2, lease_seconds: 2}
";

/// Polls `f` every 20 ms until it gives a value; panics after `secs` naming `what`.
async fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_worker_apis_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, SPEC).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).unwrap());
    let exec = Arc::new(Recorder::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let loaded = SweepSpec::load(&spec_path).unwrap();
    let mut cfg = CoordinatorConfig::from_spec(&loaded, url.clone());
    cfg.tick = Duration::from_millis(50);
    cfg.launch_grace = Duration::ZERO;
    // The recorder's "workers" never exit: the drain at the end waits this long, then kills.
    cfg.drain_grace = Duration::from_millis(500);
    let coord = Coordinator::new(store.clone(), exec.clone(), cfg);
    let stop = CancellationToken::new();
    tokio::spawn(serve(coord.clone(), listener, Some("admin-secret".into()), stop.clone()));
    let (_exit_tx, exit_rx) = tokio::sync::mpsc::unbounded_channel();
    let sched = tokio::spawn(coord.clone().run_scheduler(exit_rx, stop.clone()));

    let mut control = ControlServiceClient::connect(url.clone()).await.unwrap();
    // The control API needs the admin token.
    let err = control.get_sweep(pb::GetSweepRequest { sweep: "grpc".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    fn admin<T>(m: T) -> Request<T> {
        authed(m, "admin-secret")
    }
    // A bad spec is refused with the key path.
    let bad =
        pb::SubmitSweepRequest { spec_yaml: SPEC.replace("[1.5e9, 3.0e9]", "[-1]"), spec_path: spec_path.display().to_string() };
    let err = control.submit_sweep(admin(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("budgets[0]: expected FLOPs > 0"), "{}", err.message());

    let mut watch = {
        // Subscribe before submitting? The sweep must exist first; events of launches follow.
        let sub = pb::SubmitSweepRequest { spec_yaml: SPEC.into(), spec_path: spec_path.display().to_string() };
        let r = control.submit_sweep(admin(sub)).await.unwrap().into_inner();
        assert_eq!((r.sweep.as_str(), r.runs, r.reused_runs, r.evals), ("grpc", 4, 0, 4));
        control.watch_sweep(admin(pb::WatchSweepRequest { sweep: "grpc".into() })).await.unwrap().into_inner()
    };
    let runs = control.list_runs(admin(pb::ListRunsRequest { sweep: "grpc".into() })).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 8, "4 runs and their 4 held-out evaluation jobs");
    assert_eq!(runs.iter().filter(|r| r.eval.is_some()).count(), 4);
    assert!(runs.iter().filter_map(|r| r.eval.as_ref()).all(|e| e.task == "heldout" && e.family == "text"));

    // Two slots: two launches.
    let launched = wait_until(10, "two launches", || Some(exec.launched.lock().unwrap().clone()).filter(|l| l.len() == 2)).await;
    let first = &launched[0];
    let mut worker = WorkerServiceClient::connect(url.clone()).await.unwrap();
    let attach = |token: &str, version| {
        authed(
            pb::AttachRequest {
                protocol_version: version,
                run_id: first.run_id.clone(),
                attempt: first.attempt,
                hostname: "t".into(),
                pid: 1,
            },
            token,
        )
    };
    // Wrong token, wrong protocol version.
    let err = worker.attach(attach("nope", PROTOCOL_VERSION)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = worker.attach(attach(&first.token, PROTOCOL_VERSION + 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("protocol version"), "{}", err.message());
    // Attach: the assignment is the run's configuration.
    let a = worker.attach(attach(&first.token, PROTOCOL_VERSION)).await.unwrap().into_inner();
    let config: isoflop_core::RunConfig = serde_json::from_str(&a.run_config_json).unwrap();
    assert_eq!(config.run_id().0, first.run_id);
    assert_eq!(a.resume_checkpoint, "");
    assert_eq!(a.precision, "fp32");
    // Report progress and a checkpoint.
    let progress =
        pb::Progress { step: 5, total_steps: config.recipe.steps, loss: 3.0, micro_batch: Some(2), ..Default::default() };
    let report = pb::ReportRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: first.run_id.clone(),
        attempt: first.attempt,
        progress: vec![progress],
        checkpoints: vec![pb::CheckpointSaved { step: 5, path: "/ckpt/5".into(), tokens_seen: 1280 }],
        resumed_from: Some(0),
        ..Default::default()
    };
    let resp = worker.report(authed(report.clone(), &first.token)).await.unwrap().into_inner();
    assert!(!resp.stop);
    assert_eq!(store.latest_checkpoint(&first.run_id).unwrap().unwrap().step, 5);
    assert_eq!(store.progress(&first.run_id).unwrap()[0].micro_batch, Some(2), "the micro-batch in use is stored");
    // Finish with success: evals stored, run succeeded, a third run launched into the slot.
    let finish = pb::FinishRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: first.run_id.clone(),
        attempt: first.attempt,
        outcome: Some(pb::finish_request::Outcome::Success(pb::Success {
            metrics: vec![],
            items: vec![],
            final_loss: 2.5,
            evals: vec![pb::EvalResult { distribution: "code".into(), loss: 2.4, bits_per_byte: 3.4, tokens: 10, bytes: 10 }],
        })),
    };
    worker.finish(authed(finish.clone(), &first.token)).await.unwrap();
    assert_eq!(store.run(&first.run_id).unwrap().unwrap().state, isoflop_core::RunState::Succeeded);
    let err = worker.finish(authed(finish, &first.token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a finished attempt's token is spent");

    // The watch stream saw the first run become running, then its progress (it may or may not
    // have seen the earlier launch, depending on when the scheduler ran).
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, pb::run_event::Event::Progress(_))) {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        if ev.run_id == first.run_id {
            seen.push(ev.event.unwrap());
        }
    }
    let running = seen.iter().position(|e| matches!(e, pb::run_event::Event::State(s) if s.to == pb::RunState::Running as i32));
    let progress = seen.iter().position(|e| matches!(e, pb::run_event::Event::Progress(p) if p.step == 5));
    assert!(matches!((running, progress), (Some(r), Some(p)) if r < p), "{seen:?}");

    // The second launched run never attaches... its worker is "lost": the lease expires
    // (2 s), the failure is classified node_lost and the run is requeued for free.
    let second = launched[1].clone();
    let failed = wait_until(10, "the lost worker's lease to expire", || {
        store.attempt(&second.run_id, 1).unwrap().filter(|a| a.outcome != isoflop_store::AttemptOutcome::Active)
    })
    .await;
    assert_eq!(failed.failure_class, Some(isoflop_core::FailureClass::NodeLost), "{}", failed.message);
    assert!(failed.message.contains("lease expired"), "{}", failed.message);
    let r = store.run(&second.run_id).unwrap().unwrap();
    assert_eq!(r.retries_used, 0, "node_lost does not spend the retry budget");
    // Fenced: the "lost" worker was only slow, and reports after its attempt ended (the run
    // may be launched again meanwhile). Every call is ABORTED and nothing of it is stored.
    let of_attempt_1 =
        |events: Vec<isoflop_store::EventRow>| events.into_iter().filter(|e| e.attempt == Some(1)).collect::<Vec<_>>();
    let events = of_attempt_1(store.events(&second.run_id).unwrap());
    let late = pb::ReportRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: second.run_id.clone(),
        attempt: second.attempt,
        progress: vec![pb::Progress { step: 7, total_steps: 100, loss: 2.0, ..Default::default() }],
        checkpoints: vec![pb::CheckpointSaved { step: 7, path: "/ckpt/stale/7".into(), tokens_seen: 1792 }],
        resumed_from: Some(0),
        ..Default::default()
    };
    let err = worker.report(authed(late, &second.token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{}", err.message());
    let attach_late = pb::AttachRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: second.run_id.clone(),
        attempt: second.attempt,
        hostname: "t".into(),
        pid: 2,
    };
    assert_eq!(worker.attach(authed(attach_late, &second.token)).await.unwrap_err().code(), Code::Aborted);
    let finish_late = pb::FinishRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: second.run_id.clone(),
        attempt: second.attempt,
        outcome: Some(pb::finish_request::Outcome::Success(pb::Success { final_loss: 2.0, ..Default::default() })),
    };
    assert_eq!(worker.finish(authed(finish_late, &second.token)).await.unwrap_err().code(), Code::Aborted);
    assert!(store.progress(&second.run_id).unwrap().iter().all(|p| p.attempt != 1), "no progress of the stale attempt");
    assert!(store.checkpoints(&second.run_id).unwrap().is_empty(), "no checkpoint of the stale attempt");
    assert_eq!(of_attempt_1(store.events(&second.run_id).unwrap()), events, "no event of the stale attempt");
    assert_ne!(store.run(&second.run_id).unwrap().unwrap().state, isoflop_core::RunState::Succeeded);

    // A third worker attaches (the run launched into the first one's slot).
    // (Its lease is 2 s too, so take a launch whose attempt is still active.)
    let third = wait_until(10, "a third launch", || {
        exec.launched
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| {
                l.run_id != first.run_id
                    && store
                        .attempt(&l.run_id, l.attempt)
                        .unwrap()
                        .is_some_and(|a| a.outcome == isoflop_store::AttemptOutcome::Active)
            })
            .cloned()
    })
    .await;
    let attach_third = pb::AttachRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: third.run_id.clone(),
        attempt: third.attempt,
        hostname: "t".into(),
        pid: 3,
    };
    worker.attach(authed(attach_third, &third.token)).await.unwrap();

    // Cancel the sweep: every unfinished job (3 runs, 4 evaluation jobs) ends cancelled, live
    // workers are asked to stop.
    let n = control.cancel_sweep(admin(pb::CancelSweepRequest { sweep: "grpc".into() })).await.unwrap().into_inner().cancelled;
    assert_eq!(n, 7);
    let status = control.get_sweep(admin(pb::GetSweepRequest { sweep: "grpc".into() })).await.unwrap().into_inner();
    assert_eq!((status.total, status.succeeded, status.cancelled, status.active), (8, 1, 7, 0));
    assert!(!exec.stopped.lock().unwrap().is_empty(), "live workers were stopped");
    // The third worker stops after a checkpoint: its Finish is accepted for the checkpoint
    // alone, so the resume below starts from it (issue 12, defect 8: it was refused, and the
    // resume went back to an older step).
    let stopped = pb::FinishRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: third.run_id.clone(),
        attempt: third.attempt,
        outcome: Some(pb::finish_request::Outcome::Interrupted(pb::Interrupted {
            checkpoint_step: 12,
            checkpoint_path: "/ckpt/12".into(),
            tokens_seen: 3072,
        })),
    };
    worker.finish(authed(stopped.clone(), &third.token)).await.unwrap();
    let c = store.latest_checkpoint(&third.run_id).unwrap().unwrap();
    assert_eq!((c.step, c.attempt, c.tokens_seen), (12, third.attempt, 3072));
    assert_eq!(store.run(&third.run_id).unwrap().unwrap().state, isoflop_core::RunState::Cancelled, "still cancelled");
    // Resume requeues the cancelled runs, not the succeeded one.
    let r = control.resume_sweep(admin(pb::ResumeSweepRequest { sweep: "grpc".into(), include_diverged: false })).await.unwrap();
    assert_eq!(r.into_inner().requeued, 7);
    let err = worker.finish(authed(stopped, &third.token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "once resumed, the cancelled attempt records nothing");
    let err = control.get_sweep(admin(pb::GetSweepRequest { sweep: "nope".into() })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), sched).await.expect("the scheduler stops").unwrap();
}
