//! From a spec to stored runs: resolve its data against the prepared manifest, plan it, and
//! build the rows the store records.

use isoflop_core::eval::{ChoiceTask, EvalTask, HELDOUT_TASK, SubsetGroup, TaskKind, TextTask};
use isoflop_core::plan::{PlannedEval, PlannedRun, ResolvedData, plan, plan_evals};
use isoflop_core::spec::{ChoiceSampling, LoadedSpec, SpecError, TaskSpec};
use isoflop_core::{EvalRef, config::RunConfig};
use isoflop_data::tasks::{self, Sampling, TaskDef, TaskError};
use isoflop_data::{Manifest, english};
use isoflop_store::{EvalOf, NewRun, NewSweep};

/// Resolves a spec's corpora and eval distributions to shards with digests. Every error
/// names the spec file and the key it comes from (`data.manifest`, `data.corpora[i]`, ...).
pub fn resolve_data(loaded: &LoadedSpec) -> Result<ResolvedData, SpecError> {
    let spec = &loaded.spec;
    let file = &loaded.path;
    let Some(manifest_rel) = &spec.data.manifest else {
        return ResolvedData::external(spec)
            .ok_or_else(|| SpecError::at(file, "data.manifest", "a corpus without `external` needs a manifest"));
    };
    let manifest_path = loaded.resolve(manifest_rel);
    let manifest = Manifest::load(&manifest_path).map_err(|e| {
        SpecError::at(
            file,
            "data.manifest",
            format!("{e} (prepare it with `isoflop data prepare --out {}`)", dir_of(&manifest_path)),
        )
    })?;
    let dir = manifest_path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if manifest.tokenizer != spec.data.tokenizer {
        return Err(SpecError::at(
            file,
            "data.tokenizer",
            format!("`{}` but {} was prepared with `{}`", spec.data.tokenizer, manifest_path.display(), manifest.tokenizer),
        ));
    }
    // What the trainer reads of each shard must be there: a training window of seq_len + 1
    // tokens, and at least one scored token pair of an eval shard.
    let shard_ref = |key: String, name: &str, min_tokens: u64| -> Result<EvalRef, SpecError> {
        let entry = manifest.shard(name).ok_or_else(|| {
            SpecError::at(
                file,
                &key,
                format!(
                    "{} has no shard `{name}` (it has: train, {})",
                    manifest_path.display(),
                    manifest.eval_names().join(", ")
                ),
            )
        })?;
        if entry.tokens < min_tokens {
            return Err(SpecError::at(
                file,
                &key,
                format!("shard `{name}` has {} tokens; at least {min_tokens} are needed", entry.tokens),
            ));
        }
        let path = dir.join(&entry.path);
        if !path.is_file() {
            return Err(SpecError::at(
                file,
                &key,
                format!("shard file {} is missing (run `isoflop data prepare` again)", path.display()),
            ));
        }
        // Its header and size (a truncated or clobbered shard failed in every worker); the
        // tokens' digest is checked by the worker before training, once per machine.
        manifest.open_shard(&dir, name).map_err(|e| SpecError::at(file, &key, e.to_string()))?;
        Ok(EvalRef { name: name.to_string(), path: path.display().to_string(), digest: entry.digest.clone() })
    };
    let mut corpora = Vec::new();
    for (i, c) in spec.data.corpora.iter().enumerate() {
        let r = match &c.external {
            Some(ext) => EvalRef { name: c.name.clone(), path: String::new(), digest: format!("external:{ext}") },
            None => shard_ref(format!("data.corpora[{i}].shard"), c.shard.as_deref().unwrap_or("train"), spec.model.seq_len + 1)?,
        };
        corpora.push((c.name.clone(), r));
    }
    let names: Vec<String> = match &spec.data.evals {
        Some(list) => list.clone(),
        None => manifest.eval_names().into_iter().map(String::from).collect(),
    };
    let mut tasks = Vec::new();
    if spec.eval.heldout && !names.is_empty() {
        let mut distributions = Vec::new();
        for (i, n) in names.iter().enumerate() {
            distributions.push(shard_ref(format!("data.evals[{i}]"), n, 2)?);
        }
        let text = TextTask { distributions, tokens: spec.data.eval_tokens, skip_tokens: spec.eval.skip_tokens };
        tasks.push(EvalTask { name: HELDOUT_TASK.into(), kind: TaskKind::Text(text) });
    }
    // The tokenizer of tasks compiled here (GPT-2's takes a moment to build): once, if needed.
    let mut tok: Option<Box<dyn isoflop_data::Tokenizer>> = None;
    for (i, t) in spec.eval.tasks.iter().enumerate() {
        if let Some(x) = &t.text {
            let mut distributions = Vec::new();
            for (j, n) in x.shards.iter().enumerate() {
                distributions.push(shard_ref(format!("eval.tasks[{i}].text.shards[{j}]"), n, 2)?);
            }
            let text = TextTask { distributions, tokens: x.tokens.unwrap_or(spec.data.eval_tokens), skip_tokens: x.skip_tokens };
            tasks.push(EvalTask { name: t.name.clone(), kind: TaskKind::Text(text) });
        } else if let Some(e) = &t.english {
            let nltk = loaded.resolve(std::path::Path::new(&e.nltk));
            let tokenizer = built_once(&mut tok, manifest.tokenizer, file)?;
            let mut distributions = Vec::new();
            for (j, name) in e.varieties.iter().enumerate() {
                let key = format!("eval.tasks[{i}].english.varieties[{j}]");
                let v = english::Variety::parse(name).expect("validated");
                let docs = english::documents(&nltk, v)
                    .map_err(|x| SpecError::at(file, format!("eval.tasks[{i}].english.nltk"), x.to_string()))?;
                let (path, digest) = english::write_shard(&dir.join("tasks"), v.name(), &docs, tokenizer)
                    .map_err(|x| SpecError::at(file, &key, x.to_string()))?;
                distributions.push(EvalRef { name: v.name().into(), path: path.display().to_string(), digest });
            }
            let text = TextTask { distributions, tokens: e.tokens.unwrap_or(spec.data.eval_tokens), skip_tokens: e.skip_tokens };
            tasks.push(EvalTask { name: t.name.clone(), kind: TaskKind::Text(text) });
        } else {
            let task = choice_task(loaded, i, t, &dir.join("tasks"), built_once(&mut tok, manifest.tokenizer, file)?)?;
            tasks.push(EvalTask { name: t.name.clone(), kind: TaskKind::MultipleChoice(task) });
        }
    }
    let vocab = spec.model.vocab_size.unwrap_or(u64::from(manifest.vocab_size));
    if vocab < manifest.vocab_size as u64 {
        return Err(SpecError::at(
            file,
            "model.vocab_size",
            format!("{vocab} is smaller than the tokenizer's {}", manifest.vocab_size),
        ));
    }
    Ok(ResolvedData { tokenizer: manifest.tokenizer, vocab_size: vocab, corpora, tasks })
}

/// The tokenizer in `slot`, built on first use.
fn built_once<'a>(
    slot: &'a mut Option<Box<dyn isoflop_data::Tokenizer>>,
    kind: isoflop_core::Tokenizer,
    file: &std::path::Path,
) -> Result<&'a dyn isoflop_data::Tokenizer, SpecError> {
    if slot.is_none() {
        *slot = Some(isoflop_data::tokenizer_for(kind).map_err(|x| SpecError::at(file, "data.tokenizer", x.to_string()))?);
    }
    Ok(slot.as_deref().expect("just set"))
}

/// Compiles a multiple-choice task of `eval.tasks[i]` into `out` (content-addressed) and checks
/// what its worker would refuse: every choice's continuation must fit the model's window.
fn choice_task(
    loaded: &LoadedSpec,
    i: usize,
    t: &TaskSpec,
    out: &std::path::Path,
    tok: &dyn isoflop_data::Tokenizer,
) -> Result<ChoiceTask, SpecError> {
    let file = &loaded.path;
    let key = format!("eval.tasks[{i}]");
    let err = |sub: &str, e: TaskError| SpecError::at(file, format!("{key}.{sub}"), e.to_string());
    let sampling = |s: &ChoiceSampling| Sampling { shots: s.shots, per_subset: s.per_subset, seed: s.seed };
    let (sub, compiled) = if let Some(m) = &t.multiple_choice {
        let path = loaded.resolve(std::path::Path::new(&m.file));
        let (def, records) = TaskDef::load(&path).map_err(|e| err("multiple_choice.file", e))?;
        ("multiple_choice", def.compile(&t.name, &path, &records, sampling(&m.sampling)).map_err(|e| err("multiple_choice", e))?)
    } else if let Some(m) = &t.mmlu {
        let wheel = m.wheel.as_ref().map(|w| loaded.resolve(std::path::Path::new(w))).unwrap_or_else(tasks::mmlu_wheel_default);
        let records = tasks::mmlu_records(&wheel).map_err(|e| err("mmlu.wheel", e))?;
        ("mmlu", tasks::mmlu_def().compile(&t.name, &wheel, &records, sampling(&m.sampling)).map_err(|e| err("mmlu", e))?)
    } else if let Some(a) = &t.anthropic {
        let root = loaded.resolve(std::path::Path::new(&a.path));
        let (records, groups) = tasks::anthropic_records(&root, &a.sets).map_err(|e| err("anthropic.path", e))?;
        let mut c =
            tasks::anthropic_def().compile(&t.name, &root, &records, sampling(&a.sampling)).map_err(|e| err("anthropic", e))?;
        c.groups = groups;
        ("anthropic", c)
    } else {
        unreachable!("validated: a task says what it scores")
    };
    let window = loaded.spec.model.seq_len as usize;
    for it in &compiled.items {
        for c in 0..it.choices.len() {
            let (_, cont) = tasks::encode_choice(tok, &it.context, &it.continuation(c));
            if cont.is_empty() || cont.len() > window {
                return Err(SpecError::at(
                    file,
                    format!("{key}.{sub}"),
                    format!("item {}: choice {c} is {} tokens, outside 1..={window} (model.seq_len)", it.id, cont.len()),
                ));
            }
        }
    }
    let (path, digest) = tasks::write_compiled(out, &t.name, &compiled.items).map_err(|e| err(sub, e))?;
    Ok(ChoiceTask {
        items: EvalRef { name: t.name.clone(), path: path.display().to_string(), digest },
        count: compiled.items.len() as u64,
        groups: compiled.groups.into_iter().map(|(name, subsets)| SubsetGroup { name, subsets }).collect(),
    })
}

fn dir_of(p: &std::path::Path) -> String {
    p.parent().map(|d| d.display().to_string()).unwrap_or_else(|| ".".into())
}

/// Data that must be local to train: refuses external corpora with an error naming the key.
pub fn require_local(loaded: &LoadedSpec) -> Result<(), SpecError> {
    for (i, c) in loaded.spec.data.corpora.iter().enumerate() {
        if let Some(ext) = &c.external {
            return Err(SpecError::at(
                &loaded.path,
                format!("data.corpora[{i}].external"),
                format!("corpus `{}` is external (`{ext}`): isoflop can plan it but holds no shards to train on", c.name),
            ));
        }
    }
    Ok(())
}

/// A planned sweep, ready for the store.
#[derive(Debug, Clone)]
pub struct PlannedSweep {
    pub sweep: NewSweep,
    pub runs: Vec<PlannedRun>,
    /// Its evaluation jobs.
    pub evals: Vec<PlannedEval>,
}

impl PlannedSweep {
    /// Plans a loaded spec whose data is local.
    pub fn from_spec(loaded: &LoadedSpec) -> Result<Self, SpecError> {
        require_local(loaded)?;
        let data = resolve_data(loaded)?;
        let runs = plan(&loaded.spec, &data).map_err(|e| e.in_file(&loaded.path))?;
        let evals = plan_evals(&loaded.spec, &runs, &data.tasks);
        let spec_path = std::fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
        Ok(Self {
            sweep: NewSweep {
                name: loaded.spec.name.clone(),
                spec_yaml: loaded.text.clone(),
                spec_path: spec_path.display().to_string(),
            },
            runs,
            evals,
        })
    }

    /// Store rows of the training runs, then of the evaluation jobs.
    pub fn new_runs(&self) -> Vec<NewRun> {
        self.runs
            .iter()
            .map(|r| NewRun {
                run_id: r.run_id.0.clone(),
                name: r.name.clone(),
                corpus: r.corpus.clone(),
                budget: r.budget,
                config_json: serde_json::to_string(&r.config).expect("RunConfig serialises"),
                eval: None,
            })
            .chain(self.evals.iter().map(|e| NewRun {
                run_id: e.job_id.0.clone(),
                name: e.name.clone(),
                corpus: e.corpus.clone(),
                budget: e.budget,
                config_json: serde_json::to_string(&e.config).expect("EvalJobConfig serialises"),
                eval: Some(EvalOf {
                    parent: e.run_id.0.clone(),
                    step: e.step,
                    task: e.config.task.name.clone(),
                    family: e.config.task.kind.family().into(),
                }),
            }))
            .collect()
    }
}

/// Parses a stored run configuration.
pub fn run_config(json: &str) -> Result<RunConfig, serde_json::Error> {
    serde_json::from_str(json)
}

/// Parses a stored evaluation job configuration.
pub fn eval_config(json: &str) -> Result<isoflop_core::EvalJobConfig, serde_json::Error> {
    serde_json::from_str(json)
}
