//! `isoflop plan SPEC`: the runs a spec plans, with FLOP accounting.

use crate::args::Format;
use crate::exit::{CliResult, input};
use crate::render::table::{Table, count, duration, sci};
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
            print!("{}", costs(&loaded, &runs, corpus_tokens(&loaded, preview)));
        }
    }
    Ok(())
}

/// A run that sees its data more often than this is warned about: returns diminish beyond
/// about four epochs of repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained
/// Language Models").
pub const MAX_EPOCHS: f64 = 4.0;

/// Tokens per parameter of a compute-optimal model (Hoffmann et al. 2022): the planner checks
/// that each budget's candidates reach either side of the size this implies.
const CHINCHILLA_TOKENS_PER_PARAM: f64 = 20.0;

/// Training tokens of each corpus's shard, from the manifest (none in a preview, or for
/// external corpora).
fn corpus_tokens(loaded: &isoflop_core::spec::LoadedSpec, preview: bool) -> Vec<(String, u64)> {
    let Some(m) = loaded.spec.data.manifest.as_ref().filter(|_| !preview) else { return Vec::new() };
    let Ok(manifest) = isoflop_data::Manifest::load(loaded.resolve(m)) else { return Vec::new() };
    loaded
        .spec
        .data
        .corpora
        .iter()
        .filter(|c| c.external.is_none())
        .filter_map(|c| manifest.shard(c.shard.as_deref().unwrap_or("train")).map(|e| (c.name.clone(), e.tokens)))
        .collect()
}

/// What a sweep costs: training FLOPs per budget and overall, tokens per parameter, epochs
/// over each corpus, the budgets whose candidates may not show a minimum, and the wall time on
/// the spec's device where `isoflop bench train` measured its throughput.
fn costs(loaded: &isoflop_core::spec::LoadedSpec, runs: &[isoflop_core::plan::PlannedRun], corpus: Vec<(String, u64)>) -> String {
    let spec = &loaded.spec;
    let mut out = String::new();
    let mut warnings = Vec::new();
    let mut t = Table::new(["budget", "runs", "FLOPs", "params", "tokens/param", "epochs", "N at 20 tok/param"]);
    let epochs = |r: &isoflop_core::plan::PlannedRun| {
        corpus.iter().find(|(c, _)| *c == r.corpus).filter(|(_, n)| *n > 0).map(|(_, n)| r.tokens as f64 / *n as f64)
    };
    for &b in &spec.budgets {
        let of: Vec<_> = runs.iter().filter(|r| r.budget == b).collect();
        let label = isoflop_core::plan::budget_label(b);
        if of.is_empty() {
            warnings.push(format!("budget {label} plans no run: no candidate width fits it"));
            continue;
        }
        let flops: f64 = of.iter().map(|r| r.achieved_flops).sum();
        let (pmin, pmax) = (of.iter().map(|r| r.params).min().unwrap_or(0), of.iter().map(|r| r.params).max().unwrap_or(0));
        let tpp: Vec<f64> = of.iter().map(|r| r.tokens as f64 / r.params as f64).collect();
        let (tmin, tmax) = (tpp.iter().cloned().fold(f64::INFINITY, f64::min), tpp.iter().cloned().fold(0.0, f64::max));
        let ep = of.iter().filter_map(|r| epochs(r)).fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))));
        let n_opt = (b / (6.0 * CHINCHILLA_TOKENS_PER_PARAM)).sqrt();
        let per_corpus = of.len() / spec.data.corpora.len().max(1);
        if per_corpus < 3 {
            warnings.push(format!(
                "budget {label} has {per_corpus} candidate(s) per corpus: an IsoFLOP parabola needs at least 3 (widen grid.hidden)"
            ));
        }
        if n_opt < pmin as f64 || n_opt > pmax as f64 {
            warnings.push(format!(
                "budget {label}: its candidates span {}..{} parameters, and a compute-optimal model near {CHINCHILLA_TOKENS_PER_PARAM} \
                 tokens per parameter (about {} parameters) lies outside: its IsoFLOP curve may not bracket a minimum",
                count(pmin),
                count(pmax),
                count(n_opt as u64)
            ));
        }
        if let Some(e) = ep.filter(|e| *e > MAX_EPOCHS) {
            warnings.push(format!(
                "budget {label}: a run repeats its corpus {e:.1} times (more than {MAX_EPOCHS} epochs: repeated tokens are worth less \
                 than new ones); prepare more data or lower the budget"
            ));
        }
        t.row([
            label,
            of.len().to_string(),
            sci(flops),
            format!("{}..{}", count(pmin), count(pmax)),
            format!("{tmin:.1}..{tmax:.1}"),
            ep.map(|e| format!("{e:.2}")).unwrap_or_else(|| "-".into()),
            count(n_opt as u64),
        ]);
    }
    let total: f64 = runs.iter().map(|r| r.achieved_flops).sum();
    out.push_str(&t.render());
    out.push_str(&format!(
        "total: {} training FLOPs ({} convention) over {} runs; epochs: the most any run of the budget repeats its corpus\n",
        sci(total),
        spec.budget_convention.as_str(),
        runs.len()
    ));
    let device = spec.runtime.device.to_string();
    let key = crate::throughput::key(&device, spec.runtime.precision.as_str());
    let mfu_flops: f64 = runs.iter().map(|r| isoflop_core::flops::mfu_flops_per_token(&r.config.model) * r.tokens as f64).sum();
    match crate::throughput::lookup(&key) {
        Some(tp) if tp.flops_per_second > 0.0 => {
            let secs = mfu_flops / tp.flops_per_second;
            let parallel = spec.executor.max_parallel().max(1) as f64;
            out.push_str(&format!(
                "estimated time on {key}: {} of device time ({} FLOPs at {} FLOP/s, measured by `isoflop bench train` at {} \
                 parameters on {}); about {} with {} runs at once on as many devices\n",
                duration(secs),
                sci(mfu_flops),
                sci(tp.flops_per_second),
                count(tp.params),
                crate::render::table::utc(tp.at_ms),
                duration(secs / parallel),
                parallel
            ));
        }
        _ => out.push_str(&format!(
            "no wall-time estimate: no throughput measured on {key} (`isoflop bench train --model-json FILE --device {device}{}` measures one)\n",
            if spec.runtime.precision.is_fp32() { "" } else { " --bf16" }
        )),
    }
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// `isoflop plan SPEC --diff`: what submitting the spec would change in its store's sweep of
/// the same name. Exit 2 (and the message `run` would give) when it drops a stored run.
pub fn diff(spec_path: &Path) -> CliResult {
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    let planned = isoflop_coordinator::resolve::PlannedSweep::from_spec(&loaded).map_err(input)?;
    let name = &loaded.spec.name;
    let location = loaded.store_location().map_err(input)?;
    let stored = match location.sqlite().is_none_or(Path::is_file) {
        true => {
            let st = isoflop_store::open(&location)?;
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
            location,
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
        location,
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
