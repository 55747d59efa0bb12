//! A Llama/Qwen3-style decoder-only Transformer built on a tch [`nn::Path`].
//!
//! Per block: pre-norm RMSNorm, causal self-attention (bias-free q/k/v/o projections,
//! optional per-head QK RMSNorm before RoPE, grouped-query attention when
//! `kv_heads < heads`), residual; pre-norm RMSNorm, SwiGLU MLP
//! (`down(silu(gate(x)) * up(x))`), residual. A final RMSNorm precedes the LM head, which is
//! a separate matrix unless the embeddings are tied.
//!
//! Every matrix and embedding is initialised from `N(0, init_std²)` and every norm weight to
//! one. The random draws are made on the CPU, in a fixed order, from libtorch's global
//! generator and then moved to the target device, so the initial parameters are a function
//! of the generator's seed alone (not of the device).
//!
//! Precision: the model computes in the dtype of its parameters. They are built in fp32; with
//! mixed precision the optimiser ([`crate::optim::AdamW::with_compute_kind`]) turns them into
//! bf16 views of its compute buffer. Then the RoPE tables are cast to bf16 at use, RMSNorm
//! computes in fp32 (libtorch's `rms_norm` upcasts half-precision input and rounds once), and
//! the logits are cast to fp32 before the cross-entropy, so losses are fp32 either way.

use isoflop_core::ModelShape;
use tch::{Device, Kind, Reduction, TchError, Tensor, nn};

/// How the optimiser should treat a parameter (weight decay applies per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A 2-D projection matrix (attention, MLP, untied LM head).
    Matrix,
    /// The token embedding (also the LM head when embeddings are tied).
    Embedding,
    /// A 1-D RMSNorm weight.
    Norm,
}

/// One trainable tensor of the model, with its stable name.
#[derive(Debug)]
pub struct Param {
    /// Dotted name, e.g. `layers.0.attn.q_proj.weight`; stable across builds of one shape.
    pub name: String,
    /// The tensor (a shallow handle: it shares storage with the model's own).
    pub tensor: Tensor,
    /// What kind of parameter it is.
    pub kind: ParamKind,
}

struct Block {
    attn_norm: Tensor,
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    mlp_norm: Tensor,
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
}

/// The decoder-only Transformer.
pub struct Transformer {
    shape: ModelShape,
    hidden: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    eps: f64,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Option<Tensor>,
    rope_cos: Tensor,
    rope_sin: Tensor,
    params: Vec<Param>,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer").field("shape", &self.shape).field("params", &self.param_count()).finish()
    }
}

/// Number of parameters of a model of this shape, by formula.
///
/// With `kv_heads == heads`, untied embeddings and QK-norm this is
/// `L·(4h² + 3hI + 2h + 2·hd) + h + 2Vh`; grouped-query attention shrinks the k and v
/// projections to `h × kv_heads·hd`, tying drops the `Vh` of the LM head and no QK-norm drops
/// the `2·hd` per layer.
pub fn param_count_for(s: &ModelShape) -> u64 {
    let (h, hd, kv) = (s.hidden, s.head_dim(), s.kv_heads);
    let attn = 2 * h * h + 2 * h * kv * hd;
    let mlp = 3 * h * s.ffn_hidden;
    let norms = 2 * h + if s.qk_norm { 2 * hd } else { 0 };
    let embeddings = if s.tie_embeddings { 1 } else { 2 } * s.vocab_size * h;
    s.layers * (attn + mlp + norms) + h + embeddings
}

/// RoPE inverse frequencies `θ^(-2i/hd)`, with Llama-3 frequency scaling when configured.
pub fn rope_inv_freq(s: &ModelShape) -> Vec<f64> {
    let hd = s.head_dim() as f64;
    let base: Vec<f64> = (0..s.head_dim() / 2).map(|i| s.rope_theta.powf(-2.0 * i as f64 / hd)).collect();
    let Some(r) = &s.rope_scaling else {
        return base;
    };
    let orig = r.original_context as f64;
    let low_freq_wavelen = orig / r.low_freq_factor;
    let high_freq_wavelen = orig / r.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_freq_wavelen {
                f
            } else if wavelen > low_freq_wavelen {
                f / r.factor
            } else {
                let smooth = (orig / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
                (1.0 - smooth) * f / r.factor + smooth * f
            }
        })
        .collect()
}

/// Builds parameters in a fixed order, recording each with its name and kind.
struct Builder<'a> {
    device: Device,
    std: f64,
    params: &'a mut Vec<Param>,
}

impl Builder<'_> {
    fn normal(&mut self, p: &nn::Path, dims: &[i64], kind: ParamKind) -> Result<Tensor, TchError> {
        let t = Tensor::f_randn(dims, (Kind::Float, Device::Cpu))?.f_mul_scalar(self.std)?;
        self.add(p, t, kind)
    }

    fn ones(&mut self, p: &nn::Path, dim: i64) -> Result<Tensor, TchError> {
        let t = Tensor::f_ones([dim], (Kind::Float, Device::Cpu))?;
        self.add(p, t, ParamKind::Norm)
    }

    fn add(&mut self, p: &nn::Path, t: Tensor, kind: ParamKind) -> Result<Tensor, TchError> {
        let t = p.add("weight", t.f_to_device(self.device)?, true);
        self.params.push(Param { name: p.path("weight"), tensor: t.shallow_clone(), kind });
        Ok(t)
    }
}

impl Transformer {
    /// Builds a model whose initial parameters are a function of `seed` alone: the global
    /// generator is seeded and drawn from under a process-wide lock, so concurrent builds
    /// (tests, benchmarks) cannot interleave their draws.
    pub fn seeded(p: &nn::Path, shape: &ModelShape, seed: u64) -> Result<Self, TchError> {
        let _guard = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed as i64);
        Self::new(p, shape)
    }

    /// Builds a freshly initialised model under `p` (which fixes the device).
    pub fn new(p: &nn::Path, shape: &ModelShape) -> Result<Self, TchError> {
        shape.validate().map_err(|e| TchError::Shape(e.to_string()))?;
        let device = p.device();
        let (h, v, i) = (shape.hidden as i64, shape.vocab_size as i64, shape.ffn_hidden as i64);
        let (heads, kv_heads, hd) = (shape.heads as i64, shape.kv_heads as i64, shape.head_dim() as i64);
        let mut params = Vec::new();
        let mut b = Builder { device, std: shape.init_std, params: &mut params };

        let embed = b.normal(&p.sub("embed"), &[v, h], ParamKind::Embedding)?;
        let mut blocks = Vec::with_capacity(shape.layers as usize);
        for l in 0..shape.layers {
            let lp = p.sub("layers").sub(l);
            let ap = lp.sub("attn");
            let mp = lp.sub("mlp");
            let attn_norm = b.ones(&lp.sub("attn_norm"), h)?;
            let q_proj = b.normal(&ap.sub("q_proj"), &[heads * hd, h], ParamKind::Matrix)?;
            let k_proj = b.normal(&ap.sub("k_proj"), &[kv_heads * hd, h], ParamKind::Matrix)?;
            let v_proj = b.normal(&ap.sub("v_proj"), &[kv_heads * hd, h], ParamKind::Matrix)?;
            let o_proj = b.normal(&ap.sub("o_proj"), &[h, heads * hd], ParamKind::Matrix)?;
            let (q_norm, k_norm) = if shape.qk_norm {
                (Some(b.ones(&ap.sub("q_norm"), hd)?), Some(b.ones(&ap.sub("k_norm"), hd)?))
            } else {
                (None, None)
            };
            let mlp_norm = b.ones(&lp.sub("mlp_norm"), h)?;
            let gate_proj = b.normal(&mp.sub("gate_proj"), &[i, h], ParamKind::Matrix)?;
            let up_proj = b.normal(&mp.sub("up_proj"), &[i, h], ParamKind::Matrix)?;
            let down_proj = b.normal(&mp.sub("down_proj"), &[h, i], ParamKind::Matrix)?;
            blocks.push(Block {
                attn_norm,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm,
                k_norm,
                mlp_norm,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let final_norm = b.ones(&p.sub("final_norm"), h)?;
        let lm_head = if shape.tie_embeddings { None } else { Some(b.normal(&p.sub("lm_head"), &[v, h], ParamKind::Matrix)?) };

        let (rope_cos, rope_sin) = rope_tables(shape, device)?;
        Ok(Self {
            shape: shape.clone(),
            hidden: h,
            heads,
            kv_heads,
            head_dim: hd,
            eps: shape.norm_eps,
            embed,
            blocks,
            final_norm,
            lm_head,
            rope_cos,
            rope_sin,
            params,
        })
    }

    /// The shape this model was built from.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Every trainable tensor, in a fixed order (the order of initialisation).
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Total number of trainable scalars (equals [`param_count_for`] of the shape).
    pub fn param_count(&self) -> u64 {
        self.params.iter().map(|p| p.tensor.numel() as u64).sum()
    }

    /// Logits `[B, T, V]` for tokens `[B, T]` (`i64`, `T <= seq_len`).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor, TchError> {
        let x = self.hidden(tokens)?;
        x.f_linear(self.lm_head.as_ref().unwrap_or(&self.embed), None::<&Tensor>)
    }

    /// Logits `[M, V]` at `M` positions only: `at` holds indices into the flattened `[B·T]`
    /// positions of `tokens [B, T]` (`i64`). The output head runs on those rows alone, which is
    /// what scoring a few continuation tokens of long prompts needs.
    pub fn logits_at(&self, tokens: &Tensor, at: &Tensor) -> Result<Tensor, TchError> {
        let x = self.hidden(tokens)?;
        let x = x.f_view([-1, self.hidden])?.f_index_select(0, at)?;
        x.f_linear(self.lm_head.as_ref().unwrap_or(&self.embed), None::<&Tensor>)
    }

    /// The final hidden states `[B, T, H]` (after the last norm).
    fn hidden(&self, tokens: &Tensor) -> Result<Tensor, TchError> {
        let (b, t) = tokens.size2()?;
        if t > self.shape.seq_len as i64 || t == 0 {
            return Err(TchError::Shape(format!("sequence length {t} outside 1..={}", self.shape.seq_len)));
        }
        let mut cos = self.rope_cos.f_narrow(0, 0, t)?;
        let mut sin = self.rope_sin.f_narrow(0, 0, t)?;
        let kind = self.embed.kind();
        if cos.kind() != kind {
            // Mixed precision: rotate in the compute dtype (the tables are [T, hd], tiny).
            cos = cos.f_to_kind(kind)?;
            sin = sin.f_to_kind(kind)?;
        }
        let mut x = Tensor::f_embedding(&self.embed, tokens, -1, false, false)?;
        for blk in &self.blocks {
            let a = self.attention(blk, &self.norm(&x, &blk.attn_norm, self.hidden)?, b, t, &cos, &sin)?;
            x = x.f_add(&a)?;
            let m = self.mlp(blk, &self.norm(&x, &blk.mlp_norm, self.hidden)?)?;
            x = x.f_add(&m)?;
        }
        self.norm(&x, &self.final_norm, self.hidden)
    }

    /// Mean next-token cross-entropy (nats/token) of `targets [B, T]` given `inputs [B, T]`.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        self.cross_entropy(inputs, targets, Reduction::Mean)
    }

    /// Summed next-token cross-entropy (nats) over all `B·T` predictions.
    pub fn loss_sum(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        self.cross_entropy(inputs, targets, Reduction::Sum)
    }

    /// Next-token cross-entropy (nats) of every prediction, flattened to `[B·T]` (fp32).
    pub fn token_losses(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        self.cross_entropy(inputs, targets, Reduction::None)
    }

    fn cross_entropy(&self, inputs: &Tensor, targets: &Tensor, r: Reduction) -> Result<Tensor, TchError> {
        let mut logits = self.forward(inputs)?;
        if matches!(logits.kind(), Kind::BFloat16 | Kind::Half) {
            logits = logits.f_to_kind(Kind::Float)?;
        }
        let v = self.shape.vocab_size as i64;
        logits.f_view([-1, v])?.f_cross_entropy_loss(&targets.f_reshape([-1])?, None::<&Tensor>, r, -100, 0.0)
    }

    fn norm(&self, x: &Tensor, w: &Tensor, dim: i64) -> Result<Tensor, TchError> {
        x.f_rms_norm([dim], Some(w), self.eps)
    }

    fn attention(&self, blk: &Block, x: &Tensor, b: i64, t: i64, cos: &Tensor, sin: &Tensor) -> Result<Tensor, TchError> {
        let hd = self.head_dim;
        // One projection for q, k and v (a larger matmul than three; the weights are
        // concatenated, which backpropagates to the three parameters as a split).
        let w = Tensor::f_cat(&[&blk.q_proj, &blk.k_proj, &blk.v_proj], 0)?;
        let qkv = x.f_linear(&w, None::<&Tensor>)?;
        let parts = qkv.f_split_with_sizes([self.heads * hd, self.kv_heads * hd, self.kv_heads * hd], -1)?;
        let heads = |y: &Tensor, n: i64, norm: Option<&Tensor>| -> Result<Tensor, TchError> {
            let y = y.f_view([b, t, n, hd])?;
            let y = match norm {
                Some(nw) => self.norm(&y, nw, hd)?,
                None => y,
            };
            y.f_transpose(1, 2)
        };
        let q = apply_rope(&heads(&parts[0], self.heads, blk.q_norm.as_ref())?, cos, sin)?;
        let k = apply_rope(&heads(&parts[1], self.kv_heads, blk.k_norm.as_ref())?, cos, sin)?;
        let v = heads(&parts[2], self.kv_heads, None)?;
        let gqa = self.kv_heads != self.heads;
        let o = Tensor::f_scaled_dot_product_attention(&q, &k, &v, None::<&Tensor>, 0.0, true, None, gqa)?;
        o.f_transpose(1, 2)?.f_reshape([b, t, self.heads * hd])?.f_linear(&blk.o_proj, None::<&Tensor>)
    }

    fn mlp(&self, blk: &Block, x: &Tensor) -> Result<Tensor, TchError> {
        // gate and up as one matmul, like q/k/v above.
        let w = Tensor::f_cat(&[&blk.gate_proj, &blk.up_proj], 0)?;
        let i = blk.gate_proj.size()[0];
        let gu = x.f_linear(&w, None::<&Tensor>)?.f_split_with_sizes([i, i], -1)?;
        gu[0].f_silu()?.f_mul(&gu[1])?.f_linear(&blk.down_proj, None::<&Tensor>)
    }
}

/// `cos` and signed `sin` tables `[seq_len, head_dim]` in the rotate-half layout (each
/// frequency appears at `i` and `i + hd/2`; the first half of the `sin` table is negated, see
/// [`apply_rope`]). Angles are computed in `f64` and stored as `f32`.
fn rope_tables(s: &ModelShape, device: Device) -> Result<(Tensor, Tensor), TchError> {
    let inv = rope_inv_freq(s);
    let (n, hd) = (s.seq_len as usize, s.head_dim() as usize);
    let mut cos = Vec::with_capacity(n * hd);
    let mut sin = Vec::with_capacity(n * hd);
    for pos in 0..n {
        for sign in [-1.0f32, 1.0] {
            for f in &inv {
                let a = pos as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(sign * a.sin() as f32);
            }
        }
    }
    let shape = [n as i64, hd as i64];
    Ok((
        Tensor::f_from_slice(&cos)?.f_view(shape)?.f_to_device(device)?,
        Tensor::f_from_slice(&sin)?.f_view(shape)?.f_to_device(device)?,
    ))
}

/// Rotates `x [B, H, T, hd]` by position: `x·cos + rotate_half(x)·sin`, where
/// `rotate_half(x) = [−x₂, x₁]`. Computed as `x·cos + roll(x, hd/2)·sin±` with the signed table
/// `sin± = [−sin, sin]` (bit-identical: negation is exact), one copy forward and one backward.
fn apply_rope(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Result<Tensor, TchError> {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    x.f_mul(cos)?.f_add(&x.f_roll([half], [-1])?.f_mul(signed_sin)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Draws from libtorch's global generator under the crate's init lock: an unguarded draw
    /// in one test could land between another test's seeding and its initialisation, and
    /// change that model (the cause of a rare failure of `stop_and_resume_is_bit_identical`).
    fn random(draw: impl FnOnce() -> Tensor) -> Tensor {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        draw()
    }
    use isoflop_core::RopeScaling;

    pub(crate) fn tiny_shape() -> ModelShape {
        ModelShape {
            vocab_size: 259,
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            ffn_hidden: 64,
            seq_len: 16,
            rope_theta: 10000.0,
            rope_scaling: None,
            qk_norm: true,
            tie_embeddings: false,
            norm_eps: 1e-5,
            init_std: 0.02,
        }
    }

    #[test]
    fn param_count_formula_matches_reference() {
        let s =
            ModelShape { vocab_size: 128_256, hidden: 512, layers: 6, heads: 4, kv_heads: 4, ffn_hidden: 2048, ..tiny_shape() };
        assert_eq!(param_count_for(&s), 156_508_160);
        let (l, h, i, v, hd) = (6u64, 512u64, 2048u64, 128_256u64, 128u64);
        assert_eq!(param_count_for(&s), l * (4 * h * h + 3 * h * i + 2 * h + 2 * hd) + h + 2 * v * h);
    }

    #[test]
    fn built_model_has_formula_param_count() {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let variants = [
            tiny_shape(),
            ModelShape { tie_embeddings: true, ..tiny_shape() },
            ModelShape { qk_norm: false, ..tiny_shape() },
            ModelShape { kv_heads: 2, ..tiny_shape() },
            ModelShape { vocab_size: 1000, hidden: 48, heads: 3, kv_heads: 1, layers: 3, ffn_hidden: 80, ..tiny_shape() },
        ];
        for s in variants {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = Transformer::new(&vs.root(), &s).unwrap();
            assert_eq!(m.param_count(), param_count_for(&s), "{s:?}");
            let names: std::collections::HashSet<_> = m.params().iter().map(|p| p.name.clone()).collect();
            assert_eq!(names.len(), m.params().len(), "names are unique");
            assert_eq!(vs.len(), m.params().len(), "every variable is a parameter");
        }
    }

    /// The full 156M-parameter reference model, built (about 1 s and 0.6 GB).
    #[test]
    fn reference_model_param_count() {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let s =
            ModelShape { vocab_size: 128_256, hidden: 512, layers: 6, heads: 4, kv_heads: 4, ffn_hidden: 2048, ..tiny_shape() };
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Transformer::new(&vs.root(), &s).unwrap();
        assert_eq!(m.param_count(), 156_508_160);
    }

    #[test]
    fn forward_shapes_init_and_causality() {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let s = ModelShape { kv_heads: 2, ..tiny_shape() };
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Transformer::new(&vs.root(), &s).unwrap();
        for p in m.params() {
            match p.kind {
                ParamKind::Norm => assert_eq!(p.tensor.min().double_value(&[]), 1.0),
                _ => {
                    let std = p.tensor.std(true).double_value(&[]);
                    assert!((std - 0.02).abs() < 0.004, "{} std {std}", p.name);
                }
            }
        }
        let tokens = Tensor::randint(259, [2, 16], (Kind::Int64, Device::Cpu));
        let logits = m.forward(&tokens).unwrap();
        assert_eq!(logits.size(), vec![2, 16, 259]);
        // Changing the last token must not change the logits at earlier positions.
        let other = tokens.copy();
        let _ = other.narrow(1, 15, 1).fill_(7);
        let logits2 = m.forward(&other).unwrap();
        // Tolerances are relative to the logits' scale: the kernels may block another sequence
        // length differently (fp32 rounding, ~1e-7), while a leak from a later position would
        // change the logits by about their scale.
        let scale = logits.abs().max().double_value(&[]);
        let diff = (logits.narrow(1, 0, 15) - logits2.narrow(1, 0, 15)).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "{diff} of {scale}");
        // A shorter sequence is the prefix of a longer one.
        let short = m.forward(&tokens.narrow(1, 0, 8)).unwrap();
        let diff = (short - logits.narrow(1, 0, 8)).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "{diff} of {scale}");
        // Initial loss is close to ln(V) with small init.
        let loss = m.loss(&tokens, &tokens).unwrap().double_value(&[]);
        assert!((loss - (259f64).ln()).abs() < 0.1, "{loss}");
        assert!(m.forward(&Tensor::zeros([1, 17], (Kind::Int64, Device::Cpu))).is_err());
    }

    #[test]
    fn init_is_a_function_of_the_seed() {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let build = |seed| {
            tch::manual_seed(seed);
            let vs = nn::VarStore::new(Device::Cpu);
            let m = Transformer::new(&vs.root(), &tiny_shape()).unwrap();
            m.params().iter().map(|p| p.tensor.copy()).collect::<Vec<_>>()
        };
        let (a, b, c) = (build(1), build(1), build(2));
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        assert!(!a[0].equal(&c[0]));
    }

    /// In bf16, RMSNorm's statistics are computed in fp32 (libtorch upcasts) and the logits
    /// reach the cross-entropy as fp32.
    #[test]
    fn bf16_norm_statistics_are_fp32() {
        let x32 = random(|| Tensor::randn([4, 64], (Kind::Float, Device::Cpu))) * 3.0 + 1.0;
        let x = x32.to_kind(Kind::BFloat16);
        let w = random(|| Tensor::rand([64], (Kind::Float, Device::Cpu))).to_kind(Kind::BFloat16);
        let got = x.rms_norm([64], Some(&w), 1e-5);
        assert_eq!(got.kind(), Kind::BFloat16);
        let xf = x.to_kind(Kind::Float);
        let stats = (xf.square().mean_dim(-1, true, Kind::Float) + 1e-5).rsqrt();
        let want = (xf * stats * w.to_kind(Kind::Float)).to_kind(Kind::BFloat16);
        assert!(got.equal(&want), "rms_norm of bf16 input computes in fp32 and rounds once");
    }

    #[test]
    fn rope_matches_rotate_half_formula() {
        let s = tiny_shape();
        let (cos, signed_sin) = rope_tables(&s, Device::Cpu).unwrap();
        let hd = s.head_dim() as i64;
        let x = random(|| Tensor::randn([2, 3, 16, hd], (Kind::Float, Device::Cpu)));
        let got = apply_rope(&x, &cos, &signed_sin).unwrap();
        // x·cos + [−x₂, x₁]·sin with the unsigned table.
        let sin = Tensor::cat(&[signed_sin.narrow(1, 0, hd / 2).neg(), signed_sin.narrow(1, hd / 2, hd / 2)], 1);
        let (x1, x2) = (x.narrow(-1, 0, hd / 2), x.narrow(-1, hd / 2, hd / 2));
        let want = &x * &cos + Tensor::cat(&[x2.neg(), x1], -1) * &sin;
        assert!(got.equal(&want));
        // Position p rotates the pair (i, i + hd/2) by p·θ_i.
        let inv = rope_inv_freq(&s);
        let (p, i) = (5usize, 3usize);
        assert!((sin.double_value(&[p as i64, i as i64]) - (p as f64 * inv[i]).sin()).abs() < 1e-6);
        assert!((cos.double_value(&[p as i64, i as i64 + hd / 2]) - (p as f64 * inv[i]).cos()).abs() < 1e-6);
    }

    #[test]
    fn llama3_rope_scaling() {
        let mut s = ModelShape { hidden: 128 * 4, heads: 4, kv_heads: 4, rope_theta: 500_000.0, ..tiny_shape() };
        let plain = rope_inv_freq(&s);
        s.rope_scaling = Some(RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192 });
        let scaled = rope_inv_freq(&s);
        assert_eq!(plain.len(), 64);
        // Highest frequencies (short wavelengths) are untouched, lowest are divided by factor.
        assert_eq!(plain[0], scaled[0]);
        assert!((plain[63] / 8.0 - scaled[63]).abs() < 1e-18);
        // In between, the scaled frequency lies between f/factor and f.
        for (p, q) in plain.iter().zip(&scaled) {
            assert!(*q <= *p && *q >= p / 8.0 * (1.0 - 1e-12));
        }
        assert!(plain.iter().zip(&scaled).any(|(p, q)| q < p && *q > p / 8.0 * (1.0 + 1e-9)));
    }
}
