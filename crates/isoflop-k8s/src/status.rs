//! Pure reading of Pod and Job status: what an attempt's pod says about its run.
//!
//! The coordinator trusts a worker's own report first (success, divergence, a user error it
//! found); these verdicts matter when the worker could not report: the kernel killed it, its
//! node vanished, the scheduler preempted it, or it never started.

use isoflop_core::FailureClass;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// Container waiting reasons that mean the pod cannot start without a change by a person.
pub const USER_ERROR_WAITING: &[&str] =
    &["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName", "CreateContainerError"];

/// What an attempt's pod says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    /// Created, nothing to report yet.
    Pending,
    /// The scheduler cannot place it; its message says why.
    Unschedulable(String),
    /// Bound to a node, not running yet.
    Placed,
    /// Stuck before start for a reason that needs a person (bad image, missing secret).
    Stuck {
        reason: String,
        message: String,
    },
    Running,
    Succeeded,
    /// Ended without success.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
        class: FailureClass,
        reason: String,
    },
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Failure class of a pod disruption by the `DisruptionTarget` condition's reason.
pub fn disruption_class(reason: &str) -> FailureClass {
    match reason {
        // The pod garbage collector removes pods of deleted nodes; the taint manager evicts
        // pods from unreachable ones.
        "DeletionByPodGC" | "DeletionByTaintManager" => FailureClass::NodeLost,
        // PreemptionByScheduler, EvictionByEvictionAPI, TerminationByKubelet, and any newer one.
        _ => FailureClass::Preempted,
    }
}

/// The verdict on a pod from its status alone.
pub fn pod_verdict(pod: &Pod) -> PodVerdict {
    let Some(status) = pod.status.as_ref() else { return PodVerdict::Pending };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container = status.container_statuses.as_ref().and_then(|c| c.first());
    let terminated = container.and_then(|c| c.state.as_ref()).and_then(|s| s.terminated.as_ref());
    match phase {
        "Succeeded" => return PodVerdict::Succeeded,
        "Failed" => {
            let (code, signal) = terminated.map(|t| (Some(t.exit_code), t.signal)).unwrap_or((None, None));
            if let Some(c) = condition(pod, "DisruptionTarget").filter(|c| c.status == "True") {
                let reason = c.reason.clone().unwrap_or_else(|| "DisruptionTarget".into());
                let class = disruption_class(&reason);
                let what = match class {
                    FailureClass::NodeLost => "node lost",
                    _ => "preempted",
                };
                let detail = c.message.clone().unwrap_or_default();
                return PodVerdict::Failed { code, signal, class, reason: format!("pod {what} ({reason}): {detail}") };
            }
            if status.reason.as_deref() == Some("Evicted") {
                let msg = status.message.clone().unwrap_or_default();
                return PodVerdict::Failed {
                    code,
                    signal,
                    class: FailureClass::Preempted,
                    reason: format!("pod evicted: {msg}"),
                };
            }
            if status.reason.as_deref() == Some("NodeLost") {
                return PodVerdict::Failed { code, signal, class: FailureClass::NodeLost, reason: "pod's node was lost".into() };
            }
            let reason = terminated.and_then(|t| t.reason.clone()).unwrap_or_else(|| "Error".into());
            let class = match reason.as_str() {
                "OOMKilled" => FailureClass::Oom,
                "ContainerCannotRun" | "StartError" => FailureClass::UserError,
                _ => FailureClass::Unknown,
            };
            let mut text = format!("pod {reason}");
            if let Some(m) = terminated.and_then(|t| t.message.as_deref()).filter(|m| !m.is_empty()) {
                text.push_str(&format!(": {m}"));
            }
            return PodVerdict::Failed { code, signal, class, reason: text };
        }
        "Running" => return PodVerdict::Running,
        _ => {}
    }
    if let Some(w) = container.and_then(|c| c.state.as_ref()).and_then(|s| s.waiting.as_ref())
        && let Some(reason) = w.reason.as_deref().filter(|r| USER_ERROR_WAITING.contains(r))
    {
        return PodVerdict::Stuck { reason: reason.into(), message: w.message.clone().unwrap_or_default() };
    }
    if let Some(c) = condition(pod, "PodScheduled") {
        if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") {
            return PodVerdict::Unschedulable(c.message.clone().unwrap_or_else(|| "unschedulable".into()));
        }
        if c.status == "True" {
            return PodVerdict::Placed;
        }
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() { PodVerdict::Placed } else { PodVerdict::Pending }
}

/// What an attempt's Job says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobVerdict {
    /// Suspended (waiting for Kueue to admit it).
    Suspended,
    Active,
    Complete,
    /// Failed; `reason` is the Job condition's reason and message.
    Failed {
        reason: String,
        deadline: bool,
    },
}

/// The verdict on a Job from its spec and status.
pub fn job_verdict(job: &Job) -> JobVerdict {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let is = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if let Some(c) = is("Failed") {
        let reason = c.reason.clone().unwrap_or_default();
        let deadline = reason == "DeadlineExceeded";
        return JobVerdict::Failed {
            reason: format!("Job failed ({reason}): {}", c.message.clone().unwrap_or_default()),
            deadline,
        };
    }
    if is("Complete").is_some() {
        return JobVerdict::Complete;
    }
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        return JobVerdict::Suspended;
    }
    JobVerdict::Active
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": status}))
            .unwrap()
    }

    #[test]
    fn unschedulable_keeps_the_scheduler_message() {
        let p = pod(serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}));
        assert_eq!(pod_verdict(&p), PodVerdict::Unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()));
        let p = pod(serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}));
        assert_eq!(pod_verdict(&p), PodVerdict::Placed);
        assert_eq!(pod_verdict(&pod(serde_json::json!({"phase": "Pending"}))), PodVerdict::Pending);
    }

    #[test]
    fn failures_are_classified() {
        let oom =
            pod(serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert!(matches!(pod_verdict(&oom), PodVerdict::Failed { class: FailureClass::Oom, code: Some(137), .. }));
        let gc = pod(serde_json::json!({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists"}]}));
        let PodVerdict::Failed { class, reason, .. } = pod_verdict(&gc) else { panic!() };
        assert_eq!(class, FailureClass::NodeLost);
        assert!(reason.contains("node no longer exists"), "{reason}");
        let pre = pod(serde_json::json!({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "PreemptionByScheduler"}]}));
        assert!(matches!(pod_verdict(&pre), PodVerdict::Failed { class: FailureClass::Preempted, .. }));
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}));
        assert!(matches!(pod_verdict(&evicted), PodVerdict::Failed { class: FailureClass::Preempted, .. }));
        let err =
            pod(serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}));
        assert!(matches!(pod_verdict(&err), PodVerdict::Failed { class: FailureClass::Unknown, code: Some(1), .. }));
        assert_eq!(pod_verdict(&pod(serde_json::json!({"phase": "Succeeded"}))), PodVerdict::Succeeded);
    }

    #[test]
    fn image_and_config_errors_are_stuck() {
        let p = pod(serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}));
        assert_eq!(
            pod_verdict(&p),
            PodVerdict::Stuck { reason: "ImagePullBackOff".into(), message: "Back-off pulling image \"nope\"".into() }
        );
        let p = pod(serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(pod_verdict(&p), PodVerdict::Pending);
    }

    #[test]
    fn job_verdicts() {
        let job = |v: serde_json::Value| -> Job { serde_json::from_value(v).unwrap() };
        let j = job(serde_json::json!({"spec": {"suspend": true, "template": {}}}));
        assert_eq!(job_verdict(&j), JobVerdict::Suspended);
        let j = job(serde_json::json!({"spec": {"template": {}}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}}));
        assert!(matches!(job_verdict(&j), JobVerdict::Failed { deadline: true, .. }));
        let j = job(
            serde_json::json!({"spec": {"template": {}}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!(job_verdict(&j), JobVerdict::Complete);
    }
}
