//! What the coordinator may do on the cluster: every API call the executor makes, as RBAC rules
//! of one namespace. The Helm chart's Role is exactly this (tests/chart.rs compares them), and
//! `tests/helm_install.rs` runs a sweep, a cancel and a live log read with nothing more.

/// One rule of the coordinator's Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `""` is the core group.
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Only the object named `executor.owner_config_map` (the rule is needed only with it).
    pub owner_only: bool,
}

/// The rules, one per resource, and why each verb is there.
pub const RULES: &[Rule] = &[
    // create: one Job per attempt; get: after a conflict (a create retried, or by a restarted
    // coordinator); list: adoption on start and the watcher's list; watch: status; delete: an
    // attempt given up on; deletecollection: cancel.
    Rule {
        api_group: "batch",
        resource: "jobs",
        verbs: &["create", "get", "list", "watch", "delete", "deletecollection"],
        owner_only: false,
    },
    // list: an attempt's pod (by job-name) and the watcher's list; watch: pod status;
    // deletecollection: the pods of a Job killed at once (grace 0).
    Rule { api_group: "", resource: "pods", verbs: &["list", "watch", "deletecollection"], owner_only: false },
    // get: an attempt's log, copied when it ends and read live by `isoflop logs`.
    Rule { api_group: "", resource: "pods/log", verbs: &["get"], owner_only: false },
    // create: an attempt's token; patch: its owner, the Job; deletecollection: cancel. Never read.
    Rule { api_group: "", resource: "secrets", verbs: &["create", "patch", "deletecollection"], owner_only: false },
    // get: the UID of `owner_config_map`, which every Job names as its owner.
    Rule { api_group: "", resource: "configmaps", verbs: &["get"], owner_only: true },
];
