//! Which runtime settings (device, precision, micro-batch, checkpoint and progress cadence,
//! threads) a run's workers get, by one rule.
//!
//! **The rule:** a run's settings are those of the *first* sweep, in submission order, that
//! holds it and whose stored spec parses: the sweep that owns it (its Kubernetes Jobs carry
//! that sweep's label too). A later sweep sharing the run does not change them, so a shared
//! run trains the same way whichever sweep launches it, before and after a coordinator
//! restart. A sweep whose stored spec no longer parses (a stricter release) is skipped with
//! an error in the log; a run no parsing sweep holds gets no settings, and its next attempt
//! fails as `user_error` saying why, instead of training on defaults.

use isoflop_core::spec::{RuntimeSpec, SweepSpec};
use isoflop_store::{Store, StoreError};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// What a worker needs to run, besides its run's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRuntime {
    pub runtime: RuntimeSpec,
    pub threads: u64,
    /// The sweep whose settings these are: the run's owner (it labels its Kubernetes Jobs).
    pub sweep: String,
}

/// Runtime settings of stored runs, or why a run has none.
pub type Runtimes = HashMap<String, Result<RunRuntime, String>>;

/// The settings of every stored run by the rule above. `threads` overrides every spec's
/// `executor.threads_per_run` when set (`isoflop serve`: the daemon's executor section wins).
pub fn derive(store: &dyn Store, threads: Option<u64>) -> Result<Runtimes, StoreError> {
    let mut out = Runtimes::new();
    let mut sweeps = store.sweeps()?;
    sweeps.reverse(); // oldest first
    for sweep in sweeps {
        let settings = match SweepSpec::parse(Path::new(&sweep.spec_path), &sweep.spec_yaml) {
            Ok(spec) => Ok(RunRuntime {
                runtime: spec.runtime.clone(),
                threads: threads.unwrap_or(spec.executor.threads_per_run()),
                sweep: sweep.name.clone(),
            }),
            Err(e) => {
                tracing::error!(sweep = %sweep.name, "the stored spec no longer parses; its runs take no settings from it: {e}");
                Err(format!("the stored spec of sweep `{}` no longer parses: {e}", sweep.name))
            }
        };
        for run in store.sweep_members(&sweep.name)? {
            match out.entry(run.run_id) {
                Entry::Vacant(v) => {
                    v.insert(settings.clone());
                }
                Entry::Occupied(mut o) if o.get().is_err() && settings.is_ok() => {
                    *o.get_mut() = settings.clone();
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    Ok(out)
}
