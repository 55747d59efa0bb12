//! Exact parameter and FLOP accounting for the decoder family isoflop trains.
//!
//! Two named conventions for the compute of a training run of `T` tokens:
//!
//! * **`6N`**: `6 * N * T` with `N` the total parameter count (Kaplan et al.).
//! * **`detailed`**: `3 * F * T` where `F` is [`forward_flops_per_token`]: every matmul of
//!   every block, the full (not causally halved) attention score and value products with the
//!   softmax, and the LM head; backward is counted as twice the forward.
//!
//! The `forward` budget convention (the Marin suite's) counts only `F * T`.

use crate::config::ModelShape;
use serde::{Deserialize, Serialize};

/// How a sweep's nominal budget counts FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetConvention {
    /// Forward FLOPs only: `F * tokens` (the Marin grid's convention).
    #[serde(rename = "forward")]
    Forward,
    /// Training FLOPs, detailed: `3 * F * tokens`.
    #[serde(rename = "detailed")]
    Detailed,
    /// Training FLOPs, `6 * N * tokens`.
    #[serde(rename = "6N")]
    SixN,
}

impl BudgetConvention {
    /// The FLOPs one token costs in this convention.
    pub fn flops_per_token(self, shape: &ModelShape) -> f64 {
        match self {
            BudgetConvention::Forward => forward_flops_per_token(shape),
            BudgetConvention::Detailed => 3.0 * forward_flops_per_token(shape),
            BudgetConvention::SixN => 6.0 * params(shape) as f64,
        }
    }

    /// Name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetConvention::Forward => "forward",
            BudgetConvention::Detailed => "detailed",
            BudgetConvention::SixN => "6N",
        }
    }
}

/// Total trainable parameters: attention, SwiGLU, norms (incl. QK-norm), final norm,
/// embedding, and the LM head unless tied.
pub fn params(s: &ModelShape) -> u64 {
    let (h, i, hd) = (s.hidden, s.ffn_hidden, s.head_dim());
    let attn = h * (s.heads * hd) + 2 * h * (s.kv_heads * hd) + (s.heads * hd) * h;
    let mlp = 3 * h * i;
    let norms = 2 * h + if s.qk_norm { 2 * hd } else { 0 };
    let embed = s.vocab_size * h * if s.tie_embeddings { 1 } else { 2 };
    s.layers * (attn + mlp + norms) + h + embed
}

/// Parameters outside the embedding and LM head.
pub fn non_embedding_params(s: &ModelShape) -> u64 {
    params(s) - s.vocab_size * s.hidden * if s.tie_embeddings { 1 } else { 2 }
}

/// Forward FLOPs per token: per block the SwiGLU, QKV and output projections and the full
/// attention (`QK^T`, softmax at 3 FLOPs per score, attention times `V`), plus the LM head.
pub fn forward_flops_per_token(s: &ModelShape) -> f64 {
    let h = s.hidden as f64;
    let i = s.ffn_hidden as f64;
    let heads = s.heads as f64;
    let kv = s.kv_heads as f64;
    let hd = s.head_dim() as f64;
    let seq = s.seq_len as f64;
    let v = s.vocab_size as f64;
    let mlp = 2.0 * 3.0 * h * i;
    let qkv = 2.0 * h * (heads * hd + 2.0 * kv * hd);
    let o = 2.0 * h * h;
    let attn = (2.0 * seq * seq * heads * hd + 3.0 * seq * seq * heads + 2.0 * seq * seq * hd * heads) / seq;
    s.layers as f64 * (mlp + qkv + o + attn) + 2.0 * h * v
}

/// PaLM-style model FLOPs per token for MFU: `6 * matmul params + 12 * L * h * seq`.
pub fn mfu_flops_per_token(s: &ModelShape) -> f64 {
    let matmul = non_embedding_params(s) as f64
        - (s.layers * (2 * s.hidden) + s.hidden) as f64
        - if s.qk_norm { (s.layers * 2 * s.head_dim()) as f64 } else { 0.0 }
        + (s.vocab_size * s.hidden) as f64;
    6.0 * matmul + 12.0 * (s.layers * s.hidden * s.seq_len) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: u64, l: u64, heads: u64, v: u64, seq: u64) -> ModelShape {
        ModelShape {
            vocab_size: v,
            hidden: h,
            layers: l,
            heads,
            kv_heads: heads,
            ffn_hidden: 4 * h,
            seq_len: seq,
            rope_theta: 1e4,
            rope_scaling: None,
            qk_norm: true,
            tie_embeddings: false,
            norm_eps: 1e-5,
            init_std: 0.02,
        }
    }

    #[test]
    fn hand_computed_small_config() {
        // h=8, L=2, H=2 (hd=4), I=32, V=10, S=4.
        let s = shape(8, 2, 2, 10, 4);
        // Per block: attn 4*64=256, mlp 3*8*32=768, norms 16 + qk 8 = 24 -> 1048; x2 = 2096.
        // + final norm 8 + embed 80 + head 80 = 2264.
        assert_eq!(params(&s), 2264);
        assert_eq!(non_embedding_params(&s), 2264 - 160);
        // mlp 2*3*8*32=1536; qkv 2*8*(8+16)=384; o 128;
        // attn (2*16*2*4 + 3*16*2 + 2*16*4*2)/4 = (256+96+256)/4 = 152; block 2200; x2 = 4400;
        // head 2*8*10 = 160 -> 4560.
        assert_eq!(forward_flops_per_token(&s), 4560.0);
        assert_eq!(BudgetConvention::Detailed.flops_per_token(&s), 3.0 * 4560.0);
        assert_eq!(BudgetConvention::SixN.flops_per_token(&s), 6.0 * 2264.0);
        // matmul params: 4*64 + 768 per block = 1024, x2 = 2048, + head 80 = 2128.
        assert_eq!(mfu_flops_per_token(&s), 6.0 * 2128.0 + 12.0 * 2.0 * 8.0 * 4.0);
    }

    #[test]
    fn marin_parameter_counts() {
        assert_eq!(params(&shape(512, 6, 4, 128_256, 4096)), 156_508_160);
        assert_eq!(params(&shape(4096, 40, 32, 128_256, 4096)), 11_788_433_408);
    }

    #[test]
    fn tied_embeddings_count_once() {
        let mut s = shape(8, 2, 2, 10, 4);
        s.tie_embeddings = true;
        assert_eq!(params(&s), 2264 - 80);
    }
}
