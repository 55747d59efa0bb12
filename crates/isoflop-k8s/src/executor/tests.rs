//! The executor's event handling, with tokio's clock paused and a fake API server that
//! records every request (the real control plane is `tests/k8s_e2e.rs`'s; this is the least
//! powerful test of what the executor decides from what it sees).

use super::events::SETTLE;
use super::*;
use crate::manifest::{LABEL_ATTEMPT, LABEL_RUN};
use isoflop_coordinator::executor::ExitReport;
use isoflop_core::FailureClass;
use serde_json::json;
use tokio::sync::mpsc;

type Seen = Arc<Mutex<Vec<String>>>;

/// An API server stand-in: records `METHOD path?query` of each request (query decoded) and
/// answers lists with no items, deletes with success, and pod logs with a line of text.
fn fake_client(seen: Seen) -> Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let uri = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            let uri = uri
                .replace("%2F", "/")
                .replace("%28", "(")
                .replace("%29", ")")
                .replace("%2C", ",")
                .replace("%3D", "=")
                .replace('+', " ");
            seen.lock().unwrap().push(format!("{} {uri}", req.method()));
            let body = if req.uri().path().ends_with("/log") {
                b"worker: step 10/40\n".to_vec()
            } else if req.method() == http::Method::DELETE {
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})).unwrap()
            } else {
                serde_json::to_vec(&json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})).unwrap()
            };
            Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::from(body)))
        }
    });
    Client::new(svc, "isoflop")
}

struct Fake {
    exec: KubernetesExecutor,
    events: mpsc::UnboundedReceiver<ExecutorEvent>,
    seen: Seen,
    dir: tempfile::TempDir,
}

fn fake() -> Fake {
    let cfg: KubernetesSpec = serde_yaml::from_str(isoflop_core::kubernetes::EXAMPLE_YAML).unwrap();
    let seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let exec = KubernetesExecutor::with_client(fake_client(seen.clone()), cfg, dir.path().to_path_buf(), tx, ApiCalls::default());
    Fake { exec, events, seen, dir }
}

impl Fake {
    /// The executor tracks attempt `attempt` of `run` (as after `launch`, without its create).
    fn track(&self, run: &str, attempt: u64) {
        self.exec.shared.lock().insert((run.into(), attempt), Tracked { job: job_name(run, attempt), ..Tracked::default() });
    }

    fn next(&mut self) -> Option<ExecutorEvent> {
        self.events.try_recv().ok()
    }

    async fn requests(&self) -> Vec<String> {
        self.exec.shutdown().await;
        self.seen.lock().unwrap().clone()
    }
}

fn meta(run: &str, attempt: u64) -> serde_json::Value {
    json!({"name": format!("isoflop-{run}-a{attempt}-x"), "labels": {LABEL_RUN: run, LABEL_ATTEMPT: attempt.to_string()}})
}

fn pod(run: &str, attempt: u64, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": meta(run, attempt), "spec": {"containers": []}, "status": status})).unwrap()
}

fn job(run: &str, attempt: u64, spec: serde_json::Value, status: serde_json::Value) -> Job {
    serde_json::from_value(json!({"metadata": meta(run, attempt), "spec": spec, "status": status})).unwrap()
}

fn terminated(reason: &str, code: i32) -> serde_json::Value {
    json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason}}}]})
}

#[tokio::test(start_paused = true)]
async fn blocked_placed_and_oom_are_reported_once_and_the_log_is_kept() {
    let mut f = fake();
    f.track("r1", 1);
    let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]});
    f.exec.shared.on_pod(&pod("r1", 1, unschedulable), false);
    assert_eq!(
        f.next(),
        Some(ExecutorEvent::Blocked {
            run_id: "r1".into(),
            attempt: 1,
            message: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into()
        })
    );
    let scheduled = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]});
    f.exec.shared.on_pod(&pod("r1", 1, scheduled.clone()), false);
    assert_eq!(f.next(), Some(ExecutorEvent::Placed { run_id: "r1".into(), attempt: 1 }));
    f.exec.shared.on_pod(&pod("r1", 1, scheduled), false);
    assert_eq!(f.next(), None, "placed once");
    f.exec.shared.on_pod(&pod("r1", 1, terminated("OOMKilled", 137)), false);
    let Some(ExecutorEvent::Exited(ExitReport { class, code, reason, .. })) = f.next() else { panic!("no exit") };
    assert_eq!((class, code, reason.as_deref()), (Some(FailureClass::Oom), Some(137), Some("pod OOMKilled")));
    assert!(!f.exec.is_tracking("r1", 1));
    f.exec.shared.on_pod(&pod("r1", 1, terminated("OOMKilled", 137)), false);
    assert_eq!(f.next(), None, "an ended attempt is reported once");
    // The ended attempt's pod log is copied to its log file (here: no pod is left).
    let requests = f.requests().await;
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/namespaces/isoflop/pods?") && r.contains("isoflop.dev/run=r1")),
        "{requests:?}"
    );
    let log = std::fs::read_to_string(isoflop_coordinator::log_path(f.dir.path(), "r1", 1)).unwrap();
    assert_eq!(log, "(no pod left to read the log from)\n");
}

#[tokio::test(start_paused = true)]
async fn a_kueue_suspended_job_is_blocked_naming_the_queue() {
    let mut f = fake();
    f.track("r1", 1);
    f.exec.shared.on_job(&job("r1", 1, json!({"suspend": true, "template": {}}), json!({})), false);
    let Some(ExecutorEvent::Blocked { message, .. }) = f.next() else { panic!() };
    assert_eq!(message, "Job suspended: waiting for Kueue to admit it (queue gpu-queue)");
    f.exec.shared.on_job(&job("r1", 1, json!({"suspend": true, "template": {}}), json!({})), false);
    assert_eq!(f.next(), None, "blocked once");
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_waits_for_its_pod_then_reads_it() {
    let mut f = fake();
    f.track("r1", 1);
    f.track("r2", 1);
    let failed = |reason: &str| json!({"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": "m"}]});
    let t0 = Instant::now();
    f.exec.shared.on_job(&job("r1", 1, json!({"template": {}}), failed("BackoffLimitExceeded")), false);
    f.exec.shared.on_job(&job("r2", 1, json!({"template": {}}), failed("DeadlineExceeded")), false);
    assert_eq!(f.next(), None, "not before the pod's own event had its chance");
    // No pod event arrives: after SETTLE each Job's pod is read, and none is left. A vanished
    // pod is a lost node; a Job past its deadline is the spec's doing.
    let mut classes = Vec::new();
    for _ in 0..2 {
        let Some(ExecutorEvent::Exited(e)) = f.events.recv().await else { panic!() };
        classes.push((e.run_id, e.class));
    }
    assert!(t0.elapsed() >= SETTLE, "{:?}", t0.elapsed());
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(classes, [("r1".into(), Some(FailureClass::NodeLost)), ("r2".into(), Some(FailureClass::UserError))]);
    // A pod event that came first wins: the Job's settle then finds the attempt done.
    f.track("r3", 1);
    f.exec.shared.on_job(&job("r3", 1, json!({"template": {}}), failed("BackoffLimitExceeded")), false);
    f.exec.shared.on_pod(&pod("r3", 1, terminated("Error", 1)), false);
    let Some(ExecutorEvent::Exited(e)) = f.next() else { panic!() };
    assert_eq!((e.class, e.code), (Some(FailureClass::Unknown), Some(1)));
    tokio::time::sleep(SETTLE * 2).await;
    assert_eq!(f.next(), None);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_pod_fails_as_user_error_after_its_grace_and_its_job_goes() {
    let mut f = fake();
    f.track("r1", 1);
    let grace = Duration::from_secs(f.exec.shared.cfg.user_error_grace_seconds);
    let stuck = json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]});
    f.exec.shared.on_pod(&pod("r1", 1, stuck.clone()), false);
    tokio::time::advance(grace - Duration::from_secs(1)).await;
    f.exec.shared.on_pod(&pod("r1", 1, stuck), false);
    f.exec.shared.expire_stuck();
    assert_eq!(f.next(), None, "still within the grace period (counted from the first sighting)");
    tokio::time::advance(Duration::from_secs(1)).await;
    f.exec.shared.expire_stuck();
    let Some(ExecutorEvent::Exited(e)) = f.next() else { panic!() };
    assert_eq!(e.class, Some(FailureClass::UserError));
    let reason = e.reason.unwrap();
    assert!(reason.starts_with(&format!("pod could not start for {} s: ImagePullBackOff", grace.as_secs())), "{reason}");
    let requests = f.requests().await;
    assert!(
        requests.iter().any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/isoflop/jobs/isoflop-r1-a1")),
        "{requests:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn deletions_are_failures_only_when_the_coordinator_did_not_ask() {
    let mut f = fake();
    f.track("r1", 1);
    f.track("r2", 1);
    f.exec.stop("r1", 1);
    f.exec.shared.on_job(&job("r1", 1, json!({"template": {}}), json!({})), true);
    assert_eq!(f.next(), None, "a Job the coordinator deleted is no failure");
    let running = json!({"phase": "Running"});
    f.exec.shared.on_pod(&pod("r2", 1, running), true);
    let Some(ExecutorEvent::Exited(e)) = f.next() else { panic!() };
    assert_eq!((e.run_id.as_str(), e.class), ("r2", Some(FailureClass::Preempted)));
    assert_eq!(e.reason.as_deref(), Some("the attempt's pod was deleted before it finished"));
    let requests = f.requests().await;
    assert!(
        requests.iter().any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/isoflop/jobs/isoflop-r1-a1")),
        "{requests:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_runs_lose_their_jobs_and_secrets_in_one_request_each() {
    let mut f = fake();
    f.track("r1", 1);
    f.track("r2", 2);
    f.exec.forget_runs(&["r1".into(), "r2".into()]);
    assert!(!f.exec.is_tracking("r1", 1) && !f.exec.is_tracking("r2", 2));
    f.exec.shared.on_pod(&pod("r1", 1, terminated("Error", 143)), false);
    assert_eq!(f.next(), None, "a forgotten run's pods are not reported");
    let requests = f.requests().await;
    let deletes: Vec<&String> = requests.iter().filter(|r| r.starts_with("DELETE")).collect();
    assert_eq!(deletes.len(), 2, "{requests:?}");
    assert!(deletes[0].starts_with("DELETE /apis/batch/v1/namespaces/isoflop/jobs?"), "{}", deletes[0]);
    assert!(deletes[1].starts_with("DELETE /api/v1/namespaces/isoflop/secrets?"), "{}", deletes[1]);
    for d in deletes {
        assert!(d.contains("app.kubernetes.io/managed-by=isoflop-coordinator,isoflop.dev/run in (r1,r2)"), "{d}");
    }
    assert!(f.exec.shared.tasks.is_empty(), "shutdown joined every task");
}

#[tokio::test(start_paused = true)]
async fn live_logs_are_read_from_the_attempts_pod() {
    let f = fake();
    assert_eq!(f.exec.live_log("r1", 1).await.unwrap(), None, "no pod: no live log");
    let requests = f.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains("labelSelector=isoflop.dev/run=r1,isoflop.dev/attempt=1"), "{}", requests[0]);
}
