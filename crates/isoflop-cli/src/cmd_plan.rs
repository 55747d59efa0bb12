//! `isoflop plan SPEC`: the runs a spec plans, with FLOP accounting.

use crate::args::Format;
use crate::exit::{CliResult, input};
use crate::render::table::{Table, count, sci};
use isoflop_coordinator::resolve::resolve_data;
use isoflop_core::plan::{ResolvedData, plan as plan_runs};
use isoflop_core::spec::{ExecutorSpec, SweepSpec};
use std::path::Path;

/// Prints the plan of a spec.
pub fn plan(spec_path: &Path, format: Format) -> CliResult {
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    // Planning needs data identities, not data: external corpora plan without files. A
    // cluster spec whose manifest lives on the cluster is previewed without run ids.
    let manifest = loaded.spec.data.manifest.as_ref().map(|m| loaded.resolve(m));
    let cluster = matches!(loaded.spec.executor, ExecutorSpec::Kubernetes(_));
    let (data, preview) = match (ResolvedData::external(&loaded.spec), manifest) {
        (Some(d), _) => (d, false),
        (None, Some(m)) if cluster && !m.exists() => {
            eprintln!(
                "note: {} is not on this machine (a Kubernetes sweep reads its data on the cluster): a preview of the grid; \
                 run ids and the data checks need the data, and `isoflop submit` resolves it on the coordinator",
                m.display()
            );
            (ResolvedData::preview(&loaded.spec), true)
        }
        (None, _) => (resolve_data(&loaded).map_err(input)?, false),
    };
    let mut runs = plan_runs(&loaded.spec, &data).map_err(|e| input(e.in_file(&loaded.path)))?;
    if preview {
        for r in &mut runs {
            r.run_id.0.clear();
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&runs).map_err(anyhow::Error::from)?),
        Format::Table => {
            let mut t = Table::new([
                "run_id",
                "name",
                "budget",
                "hidden",
                "layers",
                "heads",
                "batch",
                "steps",
                "tokens",
                "params",
                "fwd_flops/tok",
                "flops_6N",
                "flops_detailed",
                "lr",
            ]);
            for r in &runs {
                t.row([
                    if r.run_id.0.is_empty() { "(needs data)".into() } else { r.run_id.0.clone() },
                    r.name.clone(),
                    sci(r.budget),
                    r.hidden.to_string(),
                    r.layers.to_string(),
                    r.heads.to_string(),
                    r.batch.to_string(),
                    r.steps.to_string(),
                    count(r.tokens),
                    count(r.params),
                    sci(r.flops_per_token),
                    sci(r.flops_6n),
                    sci(r.flops_detailed),
                    format!("{:.5}", r.lr),
                ]);
            }
            print!("{}", t.render());
            let mut budgets: Vec<String> = Vec::new();
            for b in &loaded.spec.budgets {
                let n = runs.iter().filter(|r| r.budget == *b).count();
                budgets.push(format!("{}: {n}", sci(*b)));
            }
            println!(
                "{} runs ({}); budgets count {} FLOPs; flops_detailed = 3 x forward FLOPs/token x tokens, flops_6N = 6 x params x tokens",
                runs.len(),
                budgets.join(", "),
                loaded.spec.budget_convention.as_str()
            );
        }
    }
    Ok(())
}

/// `isoflop plan SPEC --diff`: what submitting the spec would change in its store's sweep of
/// the same name. Exit 2 (and the message `run` would give) when it drops a stored run.
pub fn diff(spec_path: &Path) -> CliResult {
    use isoflop_store::{SqliteStore, Store};
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    let planned = isoflop_coordinator::resolve::PlannedSweep::from_spec(&loaded).map_err(input)?;
    let name = &loaded.spec.name;
    let store_path = loaded.store_path();
    let stored = match store_path.is_file() {
        true => {
            let st = SqliteStore::open(&store_path)?;
            match st.sweep(name)? {
                Some(_) => Some(st.sweep_runs(name)?),
                None => None,
            }
        }
        false => None,
    };
    let Some(stored) = stored else {
        println!(
            "sweep {name} is not in {}: submitting plans all {} runs and {} evaluation jobs",
            store_path.display(),
            planned.runs.len(),
            planned.evals.len()
        );
        return Ok(());
    };
    let have: std::collections::HashSet<&str> = stored.iter().map(|r| r.run_id.as_str()).collect();
    let want: std::collections::HashSet<&str> =
        planned.runs.iter().map(|r| r.run_id.0.as_str()).chain(planned.evals.iter().map(|e| e.job_id.0.as_str())).collect();
    let mut t = Table::new(["", "run_id", "name", "budget", "steps", "tokens", "flops_detailed"]);
    let added: Vec<_> = planned.runs.iter().filter(|r| !have.contains(r.run_id.0.as_str())).collect();
    for r in &added {
        t.row([
            "+".to_string(),
            r.run_id.0.clone(),
            r.name.clone(),
            sci(r.budget),
            r.steps.to_string(),
            count(r.tokens),
            sci(r.flops_detailed),
        ]);
    }
    let dropped: Vec<_> = stored.iter().filter(|r| r.is_training() && !want.contains(r.run_id.as_str())).collect();
    for r in &dropped {
        t.row(["-".to_string(), r.run_id.clone(), r.name.clone(), sci(r.budget), "".into(), "".into(), "".into()]);
    }
    let new_evals = planned.evals.iter().filter(|e| !have.contains(e.job_id.0.as_str())).count();
    let kept = planned.runs.len() - added.len();
    if !added.is_empty() || !dropped.is_empty() {
        print!("{}", t.render());
    }
    println!(
        "sweep {name} in {}: {} training run(s) added, {kept} kept, {} dropped; {new_evals} evaluation job(s) added; \
         added compute {} FLOPs",
        store_path.display(),
        added.len(),
        dropped.len(),
        sci(added.iter().map(|r| r.budget).sum())
    );
    if let Some(r) = dropped.first() {
        return Err(input(isoflop_store::StoreError::SweepConflict {
            sweep: name.clone(),
            missing: dropped.len(),
            example: format!("{} ({})", r.name, r.run_id),
        }));
    }
    Ok(())
}
