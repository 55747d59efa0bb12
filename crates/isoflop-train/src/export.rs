//! Export of a checkpoint as a Hugging Face model directory: `model.safetensors` with the
//! Llama/Qwen3 parameter names, `config.json` (`LlamaForCausalLM`, or `Qwen3ForCausalLM` when
//! the model has QK-norm), `generation_config.json`, and for the byte-level tokenizer its
//! `tokenizer.json` and `tokenizer_config.json`, so that `transformers` (and lm-evaluation-harness
//! through it) loads the model offline.
//!
//! isoflop's decoder is the same computation as those architectures: RMSNorm before attention
//! and MLP, RoPE in the rotate-half layout (QK-norm per head before it), grouped-query SDPA,
//! SiLU-gated MLP, a final RMSNorm and an untied (or tied) output head. Only the names change.

use crate::checkpoint::{self, CheckpointError};
use isoflop_core::{ModelShape, RunConfig, Tokenizer};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Errors of an export; each names the path or the setting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("checkpoint {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Unsupported(String),
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub architecture: &'static str,
    pub tensors: usize,
    pub files: Vec<PathBuf>,
}

/// The Hugging Face name of an isoflop parameter (`None` for a name isoflop does not write).
pub fn hf_name(name: &str) -> Option<String> {
    let n = name.strip_suffix(".weight")?;
    let out = match n {
        "embed" => "model.embed_tokens".to_string(),
        "final_norm" => "model.norm".to_string(),
        "lm_head" => "lm_head".to_string(),
        _ => {
            let rest = n.strip_prefix("layers.")?;
            let (l, part) = rest.split_once('.')?;
            l.parse::<u64>().ok()?;
            let part = match part {
                "attn_norm" => "input_layernorm",
                "mlp_norm" => "post_attention_layernorm",
                "attn.q_proj" => "self_attn.q_proj",
                "attn.k_proj" => "self_attn.k_proj",
                "attn.v_proj" => "self_attn.v_proj",
                "attn.o_proj" => "self_attn.o_proj",
                "attn.q_norm" => "self_attn.q_norm",
                "attn.k_norm" => "self_attn.k_norm",
                "mlp.gate_proj" => "mlp.gate_proj",
                "mlp.up_proj" => "mlp.up_proj",
                "mlp.down_proj" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{l}.{part}")
        }
    };
    Some(format!("{out}.weight"))
}

/// `config.json` of a model shape.
pub fn hf_config(shape: &ModelShape, tokenizer: Tokenizer) -> serde_json::Value {
    let (arch, model_type) = if shape.qk_norm { ("Qwen3ForCausalLM", "qwen3") } else { ("LlamaForCausalLM", "llama") };
    let (bos, eos) = special_ids(tokenizer);
    let mut c = json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn_hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim(),
        "hidden_act": "silu",
        "max_position_embeddings": shape.seq_len,
        "rms_norm_eps": shape.norm_eps,
        "rope_theta": shape.rope_theta,
        "rope_scaling": shape.rope_scaling.as_ref().map(|r| json!({
            "rope_type": "llama3",
            "factor": r.factor,
            "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_context,
        })),
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "tie_word_embeddings": shape.tie_embeddings,
        "initializer_range": shape.init_std,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if shape.qk_norm {
        c["use_sliding_window"] = json!(false);
        c["sliding_window"] = json!(null);
        c["max_window_layers"] = json!(shape.layers);
    }
    c
}

fn special_ids(tokenizer: Tokenizer) -> (u64, u64) {
    match tokenizer {
        // <|bos|> and <|endoftext|> of isoflop's byte tokenizer.
        Tokenizer::Byte => (258, 256),
        Tokenizer::Gpt2 => (50256, 50256),
        Tokenizer::Llama3 => (128000, 128001),
    }
}

/// GPT-2's printable stand-ins for the 256 byte values (the byte-level pre-tokenizer's alphabet).
fn byte_symbols() -> Vec<char> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut out = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            out[b as usize] = char::from_u32(b).expect("latin-1");
        } else {
            out[b as usize] = char::from_u32(256 + extra).expect("valid");
            extra += 1;
        }
    }
    out
}

/// `tokenizer.json` of the byte tokenizer: a byte-level BPE over the 256 byte symbols with no
/// merges (id = byte value) and the three specials after them.
pub fn byte_tokenizer_json() -> serde_json::Value {
    let symbols = byte_symbols();
    let vocab: serde_json::Map<String, serde_json::Value> =
        symbols.iter().enumerate().map(|(i, c)| (c.to_string(), json!(i))).collect();
    let special = |id: u64, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(256, "<|endoftext|>"), special(257, "<|pad|>"), special(258, "<|bos|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(v).expect("json");
    std::fs::write(path, text + "\n").map_err(|e| ExportError::Io { path: path.into(), message: e.to_string() })
}

/// Writes the checkpoint at `ckpt` of `run` as a Hugging Face model directory `out`.
pub fn export_hf(ckpt: &Path, run: &RunConfig, out: &Path) -> Result<Exported, ExportError> {
    let manifest = checkpoint::read_manifest(ckpt)?;
    if manifest.run_id != run.run_id().0 {
        return Err(ExportError::Format {
            path: ckpt.into(),
            message: format!("a checkpoint of run {}, not {}", manifest.run_id, run.run_id()),
        });
    }
    if run.data.tokenizer != Tokenizer::Byte {
        return Err(ExportError::Unsupported(format!(
            "tokenizer `{}`: only the byte tokenizer is exported with its tokenizer files",
            run.data.tokenizer
        )));
    }
    let state = ckpt.join(checkpoint::STATE_FILE);
    let tensors =
        Tensor::read_safetensors(&state).map_err(|e| ExportError::Format { path: state.clone(), message: e.to_string() })?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in tensors {
        let Some(p) = name.strip_prefix("param/") else { continue };
        let hf =
            hf_name(p).ok_or_else(|| ExportError::Format { path: state.clone(), message: format!("unknown parameter `{p}`") })?;
        named.push((hf, t));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = crate::model::param_count_for(&run.model);
    let got: u64 = named.iter().map(|(_, t)| t.numel() as u64).sum();
    if got != expected {
        return Err(ExportError::Format { path: state, message: format!("{got} parameters, the run's shape has {expected}") });
    }
    std::fs::create_dir_all(out).map_err(|e| ExportError::Io { path: out.into(), message: e.to_string() })?;
    let weights = out.join("model.safetensors");
    Tensor::write_safetensors(&named, &weights).map_err(|e| ExportError::Io { path: weights.clone(), message: e.to_string() })?;
    let config = hf_config(&run.model, run.data.tokenizer);
    let arch = if run.model.qk_norm { "Qwen3ForCausalLM" } else { "LlamaForCausalLM" };
    let (bos, eos) = special_ids(run.data.tokenizer);
    let files = vec![
        weights,
        out.join("config.json"),
        out.join("generation_config.json"),
        out.join("tokenizer.json"),
        out.join("tokenizer_config.json"),
        out.join("special_tokens_map.json"),
    ];
    write_json(&files[1], &config)?;
    write_json(&files[2], &json!({"bos_token_id": bos, "eos_token_id": eos}))?;
    write_json(&files[3], &byte_tokenizer_json())?;
    write_json(
        &files[4],
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|bos|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|pad|>",
            "add_bos_token": false,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": run.model.seq_len,
        }),
    )?;
    write_json(&files[5], &json!({"bos_token": "<|bos|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}))?;
    Ok(Exported { architecture: arch, tensors: named.len(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_has_a_hugging_face_name() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let mut shape = crate::model::tests::tiny_shape();
        shape.tie_embeddings = false;
        let m = crate::model::Transformer::new(&vs.root(), &shape).unwrap();
        let names: Vec<String> = m.params().iter().map(|p| hf_name(&p.name).unwrap_or_else(|| panic!("{}", p.name))).collect();
        assert!(names.contains(&"model.layers.1.self_attn.q_norm.weight".to_string()), "{names:?}");
        assert!(names.contains(&"model.embed_tokens.weight".to_string()) && names.contains(&"lm_head.weight".to_string()));
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), names.len());
        assert_eq!(hf_name("layers.x.attn_norm.weight"), None);
    }

    #[test]
    fn the_byte_vocabulary_is_the_256_byte_symbols_in_order() {
        let s = byte_symbols();
        assert_eq!((s[b'A' as usize], s[b' ' as usize], s[0]), ('A', '\u{120}', '\u{100}'));
        let mut u = s.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 256);
    }
}
