//! The spec's parsing and validation errors, each tested.

use super::*;
use crate::device::Device;

const MINIMAL: &str = "\
name: t
budgets: [1e12, 3e12]
model: {family: llama, seq_len: 64}
grid:
  hidden: [32, 64]
  layers: {fixed: 2}
  heads: {head_size: 16}
  target_steps: 100
  lr_constant: 0.1
  lr_max: 0.01
recipe: {warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, grad_clip: 1.0}
data:
  tokenizer: byte
  manifest: data/manifest.json
  corpora: [{name: mix}]
";

fn parse(text: &str) -> Result<SweepSpec, SpecError> {
    SweepSpec::parse(Path::new("spec.yaml"), text)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_spec_parses_with_defaults() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.budget_convention, BudgetConvention::Detailed);
    assert_eq!(s.executor, ExecutorSpec::default());
    assert_eq!(s.grid.widths(1e12), vec![32, 64]);
    assert_eq!(s.grid.heads_for(64), 4);
    assert_eq!(s.data.eval_tokens, 65_536);
}

#[test]
fn runtime_micro_batch_defaults_to_whole_batch_and_must_be_positive() {
    assert_eq!(parse(MINIMAL).unwrap().runtime.micro_batch, None);
    let s = parse(&format!("{MINIMAL}runtime: {{micro_batch: 3}}\n")).unwrap();
    assert_eq!(s.runtime.micro_batch, Some(3));
    let e = err(&format!("{MINIMAL}runtime: {{micro_batch: 0}}\n"));
    assert!(e.contains("runtime.micro_batch"), "{e}");
}

fn kubernetes(extra: &str, store: &str) -> String {
    let section: String = crate::kubernetes::EXAMPLE_YAML.lines().map(|l| format!("  {l}\n")).collect();
    format!("{MINIMAL}executor:\n  kind: kubernetes\n{section}{extra}store: {store}\n")
}

#[test]
fn kubernetes_executor_is_validated_with_the_spec() {
    let s = parse(&kubernetes("", "{sqlite: s/i.db, artifacts: /ckpt/runs}")).unwrap();
    let ExecutorSpec::Kubernetes(k) = &s.executor else { panic!("{:?}", s.executor) };
    assert_eq!((k.namespace.as_str(), k.gpus_per_run, k.max_parallel, k.listen.as_str()), ("isoflop", 1, 64, "0.0.0.0:7700"));
    assert_eq!((s.executor.max_retries(), s.executor.lease_seconds()), (3, 60));
    let e = err(&kubernetes("", "{sqlite: s/i.db}"));
    assert!(e.starts_with("spec.yaml: store.artifacts: with the kubernetes executor"), "{e}");
    let e = err(&kubernetes("", "{sqlite: s/i.db, artifacts: /elsewhere}"));
    assert!(e.contains("store.artifacts"), "{e}");
    let e = err(&kubernetes("  qps: 0\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
    assert_eq!(e, "spec.yaml: executor.qps: expected qps > 0 and burst >= 1");
    let e = err(&kubernetes("  gpus: 2\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
    assert!(e.contains("unknown field `gpus`"), "{e}");
    let e = err(&kubernetes("  listen: nowhere\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
    assert!(e.contains("executor.listen: `nowhere`: expected ADDRESS:PORT"), "{e}");
}

#[test]
fn runtime_precision_defaults_to_fp32_and_is_strict() {
    assert_eq!(parse(MINIMAL).unwrap().runtime.precision, Precision::Fp32);
    let s = parse(&format!("{MINIMAL}runtime: {{precision: bf16}}\n")).unwrap();
    assert_eq!(s.runtime.precision, Precision::Bf16);
    assert_eq!(parse(&format!("{MINIMAL}runtime: {{precision: fp32}}\n")).unwrap().runtime.precision, Precision::Fp32);
    let e = err(&format!("{MINIMAL}runtime: {{precision: fp16}}\n"));
    assert!(e.contains("runtime.precision") && e.contains("unknown variant `fp16`"), "{e}");
    assert!(e.contains("`fp32`") && e.contains("`bf16`"), "{e}");
    // The default is not written out, so stored runtime settings of old specs are unchanged.
    let json = serde_json::to_string(&RuntimeSpec::default()).unwrap();
    assert!(!json.contains("precision"), "{json}");
    assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
    assert!("BF16".parse::<Precision>().unwrap_err().contains("fp32 or bf16"));
}

#[test]
fn recipe_decay_scope_defaults_off_and_is_strict() {
    let s = parse(MINIMAL).unwrap();
    assert!(!s.recipe.decay_embeddings && !s.recipe.decay_norms);
    let text = MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_embeddings: true, decay_norms: true}");
    let s = parse(&text).unwrap();
    assert!(s.recipe.decay_embeddings && s.recipe.decay_norms);
    let e = err(&MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_norms: yes please}"));
    assert!(e.contains("recipe.decay_norms") || e.contains("decay_norms"), "{e}");
    let e = err(&MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_embedding: true}"));
    assert!(e.contains("unknown field `decay_embedding`"), "{e}");
}

#[test]
fn the_cluster_example_is_a_valid_kubernetes_spec() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-sweep.yaml");
    let s = SweepSpec::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let ExecutorSpec::Kubernetes(k) = &s.executor else { panic!("{:?}", s.executor) };
    assert_eq!((k.gpus_per_run, k.volumes.len()), (1, 2));
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = err(&MINIMAL.replace("  target_steps: 100", "  target_steps: 100\n  target_stepz: 5"));
    assert!(e.starts_with("spec.yaml: 9:3: grid: unknown field `target_stepz`"), "{e}");
    assert!(e.contains("expected one of"), "{e}");
}

#[test]
fn wrong_type_names_key_path() {
    let e = err(&MINIMAL.replace("seq_len: 64", "seq_len: long"));
    assert!(e.starts_with("spec.yaml: 3:") && e.contains("model.seq_len: invalid type: string \"long\", expected u64"), "{e}");
    let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: deep"));
    assert!(e.contains("`marin`, {width_per_layer: R} or {fixed: L}"), "{e}");
}

#[test]
fn impossible_values_name_the_key() {
    let e = err(&MINIMAL.replace("[1e12, 3e12]", "[1e12, -3]"));
    assert_eq!(e, "spec.yaml: budgets[1]: expected FLOPs > 0, got -3");
    let e = err(&MINIMAL.replace("[1e12, 3e12]", "[1e12, 3e12, 1.0e12]"));
    assert_eq!(e, "spec.yaml: budgets[2]: 1e12 repeats budgets[0]: every budget once");
    let e = err(&MINIMAL.replace("hidden: [32, 64]", "hidden: [32, 64, 64]"));
    assert_eq!(e, "spec.yaml: grid.hidden[2]: 64 repeats grid.hidden[1]: every width once");
    let e = err(&MINIMAL.replace("[1e12, 3e12]", "[]"));
    assert!(e.contains("budgets: expected at least one budget"), "{e}");
    let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {fixed: 3}"));
    assert_eq!(e, "spec.yaml: grid.heads.fixed: width 32 is not divisible by its 3 heads");
    let e = err(&MINIMAL.replace("decay_frac: 0.2", "decay_frac: 0.95"));
    assert!(e.contains("recipe.decay_frac: warmup_frac + decay_frac must be <= 1"), "{e}");
    let e = err(&MINIMAL.replace("  manifest: data/manifest.json\n", ""));
    assert!(e.contains("data.manifest: corpus `mix` reads a local shard"), "{e}");
    let e = err(&MINIMAL.replace("beta2: 0.95", "beta2: 1.5"));
    assert!(e.contains("recipe.beta2: expected a number in [0, 1), got 1.5"), "{e}");
    let e = err(&format!("{MINIMAL}executor: {{kind: local, max_parallel: 0}}\n"));
    assert!(e.contains("executor.max_parallel: expected at least 1"), "{e}");
    let e = err(&format!("{MINIMAL}executor: {{kind: slurm}}\n"));
    assert!(e.contains("unknown variant `slurm`"), "{e}");
}

#[test]
fn shapes_the_trainer_would_refuse_are_refused_naming_the_grid_key() {
    // Width 36 with 4 heads: head dimension 9, which RoPE cannot rotate.
    let e = err(&MINIMAL.replace("hidden: [32, 64]", "hidden: [36]").replace("heads: {head_size: 16}", "heads: {fixed: 4}"));
    assert_eq!(
        e,
        "spec.yaml: grid.heads.fixed: width 36 with 4 heads has head dimension 9; RoPE needs an even head \
         dimension (at least 2)"
    );
    let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_size: 1}"));
    assert!(e.starts_with("spec.yaml: grid.heads.head_size: width 32 with 32 heads has head dimension 1"), "{e}");
    let e = err(&MINIMAL
        .replace("hidden: [32, 64]", "hidden: [2]")
        .replace("  lr_max: 0.01", "  lr_max: 0.01\n  ffn_multiplier: 0.1"));
    assert!(e.starts_with("spec.yaml: grid.ffn_multiplier: expected a positive SwiGLU width, got 0"), "{e}");
}

#[test]
fn rule_maps_with_mixed_keys_are_refused() {
    let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {fixed: 2, width_per_layer: 64}"));
    assert!(e.contains("grid.layers: expected one of `width_per_layer`, `fixed`, not several"), "{e}");
    let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {fixed: 2, depth: 3}"));
    assert!(e.contains("grid.layers: unknown field `depth`, expected `width_per_layer` or `fixed`"), "{e}");
    let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {}"));
    assert!(e.contains("grid.layers: expected one of `width_per_layer`, `fixed`"), "{e}");
    let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_size: 16, fixed: 2}"));
    assert!(e.contains("grid.heads: expected one of `head_size`, `fixed`, not several"), "{e}");
    let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_sise: 16}"));
    assert!(e.contains("grid.heads: unknown field `head_sise`"), "{e}");
    let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: 4"));
    assert!(e.contains("grid.heads: invalid type: integer `4`, expected {head_size: S} or {fixed: H}"), "{e}");
    let e = err(&MINIMAL.replace("hidden: [32, 64]", "hidden: {from: 32, to: 64, step: 32, stride: 2}"));
    assert!(e.contains("grid.hidden: unknown field `stride`"), "{e}");
    let e = err(&MINIMAL.replace("beta2: 0.95", "beta2: {batch_scaled: 0.98, base: 0.9}"));
    assert!(e.contains("recipe.beta2: unknown field `base`"), "{e}");
    // The well-formed spellings still parse.
    let s = parse(&MINIMAL.replace("layers: {fixed: 2}", "layers: {width_per_layer: 32}")).unwrap();
    assert_eq!(s.grid.layers, LayersRule::WidthPerLayer { width_per_layer: 32.0 });
    let s = parse(&MINIMAL.replace("layers: {fixed: 2}", "layers: marin")).unwrap();
    assert_eq!(s.grid.layers, LayersRule::Named(NamedLayers::Marin));
    let s = parse(&MINIMAL.replace("hidden: [32, 64]", "hidden: {from: 32, to: 64, step: 32}")).unwrap();
    assert_eq!(s.grid.widths(1e12), vec![32, 64]);
    let s = parse(&MINIMAL.replace("beta2: 0.95", "beta2: {batch_scaled: 0.98}")).unwrap();
    assert_eq!(s.recipe.beta2, Beta2Spec::Scaled { batch_scaled: 0.98 });
}

#[test]
fn device_and_tokenizer_are_typed() {
    let s = parse(&format!("{MINIMAL}runtime: {{device: cuda}}\n")).unwrap();
    assert_eq!(s.runtime.device, Device::Cuda(0));
    let e = err(&format!("{MINIMAL}runtime: {{device: gpu}}\n"));
    assert!(e.contains("runtime.device: expected cpu, cuda or cuda:N, got `gpu`"), "{e}");
    let e = err(&MINIMAL.replace("tokenizer: byte", "tokenizer: llama"));
    assert!(e.contains("data.tokenizer: unknown variant `llama`"), "{e}");
    assert_eq!(parse(MINIMAL).unwrap().data.tokenizer, Tokenizer::Byte);
}

#[test]
fn paths_resolve_against_the_spec_directory() {
    let spec = parse(MINIMAL).unwrap();
    let loaded = LoadedSpec { spec, path: PathBuf::from("/x/examples/s.yaml"), text: String::new() };
    assert_eq!(loaded.store_location().unwrap(), StoreLocation::Sqlite("/x/examples/.isoflop/isoflop.db".into()));
    assert_eq!(loaded.artifacts_dir(), PathBuf::from("/x/examples/.isoflop/runs"));
    assert_eq!(loaded.resolve(Path::new("/abs")), PathBuf::from("/abs"));
    assert_eq!(loaded.resolve(Path::new("../data/m.json")), PathBuf::from("/x/data/m.json"));
    let rel = LoadedSpec { path: PathBuf::from("examples/q.yaml"), ..loaded.clone() };
    assert_eq!(rel.resolve(Path::new("../.isoflop/db")), PathBuf::from(".isoflop/db"));
    let up = LoadedSpec { path: PathBuf::from("q.yaml"), ..loaded };
    assert_eq!(up.resolve(Path::new("../db")), PathBuf::from("../db"));
}
