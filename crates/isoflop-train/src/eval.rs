//! Evaluation: a model on one held-out shard (mean loss and bits-per-byte), and
//! [`run_eval`], an evaluation job scoring one checkpoint of a run.

use crate::model::Transformer;
use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::{Control, TrainError, open_shard};
pub use isoflop_core::EvalScore;
use isoflop_core::choice::{ChoiceItem, ItemScore, aggregate};
use isoflop_core::eval::{EvalJobConfig, TaskKind, metric};
use isoflop_core::{EvalMetric, Precision, RunConfig};
use isoflop_data::Shard;
use std::path::PathBuf;
use tch::{Device, Kind, TchError, Tensor, nn};

/// One evaluation job as a worker runs it.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The training run whose checkpoint is scored.
    pub run: RunConfig,
    pub job: EvalJobConfig,
    /// The checkpoint directory at `job.step`.
    pub checkpoint: PathBuf,
    pub device: Device,
    /// fp32, or bf16 (the model's compute copy in bf16, as training evaluates).
    pub precision: Precision,
    /// libtorch intra-op threads (0 leaves libtorch's default). Process-wide.
    pub threads: usize,
}

/// What an evaluation job produced: its metrics, and per item for multiple choice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvalOutput {
    pub metrics: Vec<EvalMetric>,
    pub items: Vec<ItemScore>,
}

/// Scores one checkpoint on the job's task; `progress(done, total)` is called after each
/// batch (of text windows, or of multiple-choice rows) and stops the job (`Ok(None)`) by
/// returning [`Control::Stop`]. Errors in the job's data or checkpoint are user errors
/// ([`TrainError::class`]).
pub fn run_eval(job: &EvalJob, progress: &mut dyn FnMut(u64, u64) -> Control) -> Result<Option<EvalOutput>, TrainError> {
    job.run.validate().map_err(|e| TrainError::Config(e.to_string()))?;
    job.job.validate().map_err(|e| TrainError::Config(e.to_string()))?;
    if job.threads > 0 {
        tch::set_num_threads(job.threads.min(i32::MAX as usize) as i32);
    }
    let manifest = crate::checkpoint::read_manifest(&job.checkpoint)?;
    if manifest.step != job.job.step || manifest.run_id != job.job.run.0 {
        return Err(TrainError::Config(format!(
            "{}: checkpoint of run {} at step {}, not run {} at step {}",
            job.checkpoint.display(),
            manifest.run_id,
            manifest.step,
            job.job.run,
            job.job.step
        )));
    }
    let vs = nn::VarStore::new(job.device);
    let model = Transformer::new(&vs.root(), &job.run.model)?;
    let compute = match job.precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    };
    let mut opt = AdamW::with_compute_kind(model.params(), AdamWConfig::from_recipe(&job.run.recipe), compute)?;
    crate::checkpoint::load(&job.checkpoint, &mut opt)?;
    let batch = job.run.recipe.batch as usize;
    match &job.job.task.kind {
        TaskKind::Text(t) => {
            let shards = t
                .distributions
                .iter()
                .map(|d| Ok((d.name.clone(), open_shard(d, job.run.model.vocab_size)?)))
                .collect::<Result<Vec<_>, TrainError>>()?;
            let seq_len = job.run.model.seq_len as usize;
            let total: u64 = shards
                .iter()
                .map(|(name, s)| match eval_windows(s.len(), seq_len, t.tokens) {
                    Some((n, _)) => Ok(n as u64),
                    None => Err(TrainError::Config(format!(
                        "{}: shard {name:?} has {} tokens, too few to score",
                        s.path().display(),
                        s.len()
                    ))),
                })
                .sum::<Result<u64, TrainError>>()?;
            let mut out = Vec::new();
            let mut done = 0;
            if progress(0, total) == Control::Stop {
                return Ok(None);
            }
            for (name, shard) in &shards {
                let scored = evaluate_skipping(&model, name, shard, t.tokens, t.skip_tokens, batch, job.device, &mut |n| {
                    done += n;
                    progress(done, total)
                })?;
                let Some(e) = scored else { return Ok(None) };
                let m = |metric: &str, value: f64| EvalMetric { subset: name.clone(), metric: metric.into(), value };
                out.extend([
                    m(metric::LOSS, e.loss),
                    m(metric::BPB, e.bits_per_byte),
                    m(metric::TOKENS, e.tokens as f64),
                    m(metric::BYTES, e.bytes),
                ]);
            }
            Ok(Some(EvalOutput { metrics: out, items: Vec::new() }))
        }
        TaskKind::MultipleChoice(t) => {
            let items = isoflop_data::tasks::read_compiled(std::path::Path::new(&t.items.path), &t.items.digest)
                .map_err(|e| TrainError::Config(e.to_string()))?;
            if items.len() as u64 != t.count {
                return Err(TrainError::Config(format!("{}: {} items, the job expects {}", t.items.path, items.len(), t.count)));
            }
            let tok = isoflop_data::tokenizer_for(job.run.data.tokenizer).map_err(|e| TrainError::Config(e.to_string()))?;
            let budget = batch * job.run.model.seq_len as usize;
            let Some(lls) = score_choices(&model, tok.as_ref(), &items, budget, job.device, progress)? else {
                return Ok(None);
            };
            let scored: Vec<ItemScore> = items.iter().zip(lls).enumerate().map(|(i, (it, ll))| it.scored(i as u64, ll)).collect();
            Ok(Some(EvalOutput { metrics: aggregate(&scored, &t.groups), items: scored }))
        }
    }
}

/// One forward row of multiple-choice scoring: an input, and the choices it scores.
struct ChoiceRow {
    item: usize,
    input: Vec<i64>,
    /// Per choice scored on this row: its index and `(position, target)` pairs.
    choices: Vec<(usize, Vec<(usize, i64)>)>,
}

/// The log-likelihood of every choice of every item, as lm-evaluation-harness computes it
/// ([`isoflop_data::tasks::encode_choice`]; the input is `context + continuation` without its
/// last token, cut from the left to the model's window).
///
/// Choices of an item whose inputs are equal (MMLU's letters: they differ in their last token
/// only) share one forward row. Rows run longest first, in batches of at most `budget_tokens`
/// padded tokens (right padding: a causal model's earlier positions do not see it), and the
/// output head runs only at the scored positions. `progress(rows done, rows)` after each batch.
pub fn score_choices(
    model: &Transformer,
    tok: &dyn isoflop_data::Tokenizer,
    items: &[ChoiceItem],
    budget_tokens: usize,
    device: Device,
    progress: &mut dyn FnMut(u64, u64) -> Control,
) -> Result<Option<Vec<Vec<f64>>>, TrainError> {
    let window = model.shape().seq_len as usize;
    let mut rows: Vec<ChoiceRow> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let first_row = rows.len();
        for c in 0..it.choices.len() {
            let (ctx, cont) = isoflop_data::tasks::encode_choice(tok, &it.context, &it.continuation(c));
            if cont.is_empty() || cont.len() > window {
                return Err(TrainError::Config(format!(
                    "item {}: choice {c} is {} tokens, outside 1..={window}",
                    it.id,
                    cont.len()
                )));
            }
            let full: Vec<i64> = ctx.iter().chain(&cont).map(|&t| i64::from(t)).collect();
            let start = (full.len() - 1).saturating_sub(window);
            let input = full[start..full.len() - 1].to_vec();
            let l = input.len();
            let scored: Vec<(usize, i64)> = cont.iter().enumerate().map(|(k, &t)| (l - cont.len() + k, i64::from(t))).collect();
            match rows[first_row..].iter_mut().find(|r| r.input == input) {
                Some(r) => r.choices.push((c, scored)),
                None => rows.push(ChoiceRow { item: i, input, choices: vec![(c, scored)] }),
            }
        }
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(rows[r].input.len()));
    let mut lls: Vec<Vec<f64>> = items.iter().map(|it| vec![0.0; it.choices.len()]).collect();
    let total = rows.len() as u64;
    let mut done = 0u64;
    if progress(0, total) == Control::Stop {
        return Ok(None);
    }
    let budget = budget_tokens.max(window);
    let mut next = 0;
    let result = tch::no_grad(|| -> Result<bool, TrainError> {
        while next < order.len() {
            let width = rows[order[next]].input.len();
            let n = (budget / width).max(1).min(order.len() - next);
            let batch = &order[next..next + n];
            let mut buf = vec![0i64; n * width];
            let (mut at, mut targets) = (Vec::new(), Vec::new());
            for (b, &r) in batch.iter().enumerate() {
                let row = &rows[r];
                buf[b * width..b * width + row.input.len()].copy_from_slice(&row.input);
                for (_, scored) in &row.choices {
                    for &(p, t) in scored {
                        at.push((b * width + p) as i64);
                        targets.push(t);
                    }
                }
            }
            let tokens = Tensor::f_from_slice(&buf)?.f_view([n as i64, width as i64])?.f_to_device(device)?;
            let at_t = Tensor::f_from_slice(&at)?.f_to_device(device)?;
            let tg = Tensor::f_from_slice(&targets)?.f_to_device(device)?.f_unsqueeze(1)?;
            let logp = model.logits_at(&tokens, &at_t)?.f_to_kind(Kind::Float)?.f_log_softmax(-1, Kind::Float)?;
            let picked = logp.f_gather(1, &tg, false)?.f_squeeze_dim(1)?.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
            let values = Vec::<f64>::try_from(&picked).map_err(|e| TrainError::Config(format!("reading scores: {e}")))?;
            let mut k = 0;
            for &r in batch {
                let row = &rows[r];
                for (c, scored) in &row.choices {
                    lls[row.item][*c] = values[k..k + scored.len()].iter().sum();
                    k += scored.len();
                }
            }
            next += n;
            done += n as u64;
            if progress(done, total) == Control::Stop {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    Ok(result.then_some(lls))
}

/// Bits per byte of `total_nats` of cross-entropy spread over `bytes` bytes of text:
/// `total_nats / ln 2 / bytes`.
pub fn bits_per_byte(total_nats: f64, bytes: f64) -> f64 {
    total_nats / std::f64::consts::LN_2 / bytes
}

/// The windows scored on a shard of `len` tokens: `(count, window length)`.
///
/// Consecutive non-overlapping windows of `seq_len + 1` tokens from token 0 (stride
/// `seq_len`, so each token but the first of the shard is predicted at most once), as many as
/// fit in the shard and in a budget of `max_tokens` predicted tokens, but at least one. A
/// shard shorter than `seq_len + 1` gives one window of the whole shard. `None` when the
/// shard has fewer than two tokens (nothing to predict).
pub fn eval_windows(len: usize, seq_len: usize, max_tokens: u64) -> Option<(usize, usize)> {
    if len < 2 || seq_len == 0 {
        return None;
    }
    if len < seq_len + 1 {
        return Some((1, len));
    }
    let fit = (len - 1) / seq_len;
    let budget = (max_tokens / seq_len as u64).max(1) as usize;
    Some((fit.min(budget), seq_len + 1))
}

/// Evaluates `model` on `shard` in batches of `batch` windows (see [`eval_windows`]).
///
/// `loss` is the mean cross-entropy over all predicted tokens. Bytes are estimated as
/// `tokens · byte_count / token_count` of the whole shard, i.e. the scored tokens are assumed
/// to encode the shard's average bytes per token. For the byte-level tokenizer this is exact
/// except for end-of-text tokens (which encode no bytes); for BPE tokenizers it is the
/// shard-average compression applied to the scored prefix.
pub fn evaluate(
    model: &Transformer,
    name: &str,
    shard: &Shard,
    max_tokens: u64,
    batch: usize,
    device: Device,
) -> Result<EvalScore, TchError> {
    let scored = evaluate_skipping(model, name, shard, max_tokens, 0, batch, device, &mut |_| Control::Continue)?;
    Ok(scored.expect("never stopped"))
}

/// [`evaluate`], leaving out of the score the predictions of the first `skip` tokens of each
/// document (they are still context for what follows within the window); `windows_done(n)` is
/// called after each batch of `n` windows, and `None` returned when it says stop. With `skip`
/// 0 the sums are [`evaluate`]'s exactly.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_skipping(
    model: &Transformer,
    name: &str,
    shard: &Shard,
    max_tokens: u64,
    skip: u64,
    batch: usize,
    device: Device,
    windows_done: &mut dyn FnMut(u64) -> Control,
) -> Result<Option<EvalScore>, TchError> {
    let seq_len = model.shape().seq_len as usize;
    let Some((count, window)) = eval_windows(shard.len(), seq_len, max_tokens) else {
        return Err(TchError::Shape(format!("{}: too few tokens to evaluate ({})", shard.path().display(), shard.len())));
    };
    let stride = window - 1;
    let batch = batch.max(1);
    // With `skip`, which predicted positions count: the target's offset in its document.
    let starts = if skip > 0 { shard.doc_starts() } else { Vec::new() };
    let counted = |p: usize| -> bool {
        let i = starts.partition_point(|&s| s as usize <= p);
        let start = if i == 0 { 0 } else { starts[i - 1] as usize };
        (p - start) as u64 >= skip
    };
    let mut scored = 0u64;
    let mut stopped = false;
    let total = tch::no_grad(|| -> Result<Tensor, TchError> {
        let mut total = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut buf = Vec::new();
        let mut mask = Vec::new();
        for first in (0..count).step_by(batch) {
            let rows = batch.min(count - first);
            buf.resize(rows * window, 0i64);
            for (r, row) in buf.chunks_exact_mut(window).enumerate() {
                shard.read_into((first + r) * stride, row);
            }
            let all = Tensor::f_from_slice(&buf)?.f_view([rows as i64, window as i64])?.f_to_device(device)?;
            let inputs = all.f_narrow(1, 0, stride as i64)?;
            let targets = all.f_narrow(1, 1, stride as i64)?;
            if skip == 0 {
                total = total.f_add(&model.loss_sum(&inputs, &targets)?.f_to_kind(Kind::Double)?)?;
                scored += (rows * stride) as u64;
            } else {
                mask.clear();
                for r in 0..rows {
                    let base = (first + r) * stride + 1;
                    mask.extend((0..stride).map(|j| if counted(base + j) { 1.0f32 } else { 0.0 }));
                }
                scored += mask.iter().filter(|&&m| m > 0.0).count() as u64;
                let m = Tensor::f_from_slice(&mask)?.f_to_device(device)?;
                let losses = model.token_losses(&inputs, &targets)?.f_mul(&m)?;
                total = total.f_add(&losses.f_sum(Kind::Double)?)?;
            }
            if windows_done(rows as u64) == Control::Stop {
                stopped = true;
                break;
            }
        }
        Ok(total)
    })?;
    if stopped {
        return Ok(None);
    }
    let total_nats = total.f_double_value(&[])?;
    let tokens = scored;
    if tokens == 0 {
        return Err(TchError::Shape(format!(
            "{}: no token left to score after skipping the first {skip} of each document",
            shard.path().display()
        )));
    }
    let h = shard.header();
    let bytes = if h.token_count == 0 { 0.0 } else { tokens as f64 * h.byte_count as f64 / h.token_count as f64 };
    Ok(Some(EvalScore {
        distribution: name.to_string(),
        loss: total_nats / tokens as f64,
        bits_per_byte: bits_per_byte(total_nats, bytes),
        tokens,
        bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_byte_arithmetic() {
        // ln 2 nats is one bit; over one byte that is 1 bit/byte.
        assert!((bits_per_byte(std::f64::consts::LN_2, 1.0) - 1.0).abs() < 1e-15);
        // 1000 tokens at 2 nats each over 4000 bytes.
        let want = 2000.0 / std::f64::consts::LN_2 / 4000.0;
        assert!((bits_per_byte(2000.0, 4000.0) - want).abs() < 1e-15);
        assert!((bits_per_byte(2000.0, 4000.0) - 0.721_347_520_444_481_7).abs() < 1e-12);
    }

    #[test]
    fn evaluates_whole_windows_and_short_shards() {
        use isoflop_data::ShardWriter;
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let shard = |name: &str, n: u32| {
            let path = dir.path().join(name);
            let mut w = ShardWriter::create(&path, 259).unwrap();
            w.push_document(&(0..n).map(|i| (i * 7) % 256).collect::<Vec<_>>(), 2 * n as u64).unwrap();
            w.finish().unwrap();
            Shard::open(&path).unwrap()
        };
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = Transformer::new(&vs.root(), &crate::model::tests::tiny_shape()).unwrap();
        // seq_len 16: 50 tokens hold three windows of 17 (48 predictions).
        let long = shard("long.bin", 50);
        let r = evaluate(&model, "long", &long, 1 << 20, 2, Device::Cpu).unwrap();
        assert_eq!((r.distribution.as_str(), r.tokens, r.bytes), ("long", 48, 96.0));
        assert!((r.loss - 259f64.ln()).abs() < 0.1, "{r:?}");
        assert!((r.bits_per_byte - r.loss * 48.0 / std::f64::consts::LN_2 / 96.0).abs() < 1e-12);
        // The same windows scored one at a time, by hand.
        let mut total = 0.0;
        for w in 0..3 {
            let mut buf = vec![0i64; 17];
            long.read_into(w * 16, &mut buf);
            let t = Tensor::from_slice(&buf).view([1, 17]);
            total += model.loss_sum(&t.narrow(1, 0, 16), &t.narrow(1, 1, 16)).unwrap().double_value(&[]);
        }
        // The same sums in fp32 computed in other batch shapes: equal to a few ulps of each.
        assert!((r.loss - total / 48.0).abs() <= 1e-5 * r.loss, "{} vs {}", r.loss, total / 48.0);
        // The budget caps the windows; a short shard gives one shorter window.
        assert_eq!(evaluate(&model, "long", &long, 20, 2, Device::Cpu).unwrap().tokens, 16);
        let r = evaluate(&model, "short", &shard("short.bin", 10), 1 << 20, 4, Device::Cpu).unwrap();
        assert_eq!(r.tokens, 9);
        assert!(evaluate(&model, "tiny", &shard("tiny.bin", 1), 1 << 20, 4, Device::Cpu).is_err());
    }

    /// The log-likelihood of `cont` after `ctx`, by hand: one sequence, the full logits.
    fn by_hand(model: &Transformer, ctx: &[u32], cont: &[u32]) -> f64 {
        let window = model.shape().seq_len as usize;
        let full: Vec<i64> = ctx.iter().chain(cont).map(|&t| i64::from(t)).collect();
        let start = (full.len() - 1).saturating_sub(window);
        let input = &full[start..full.len() - 1];
        let t = Tensor::from_slice(input).view([1, input.len() as i64]);
        let logp = tch::no_grad(|| model.forward(&t).unwrap().log_softmax(-1, Kind::Float));
        let l = input.len();
        cont.iter().enumerate().map(|(k, &tok)| logp.double_value(&[0, (l - cont.len() + k) as i64, i64::from(tok)])).sum()
    }

    #[test]
    fn choices_score_as_one_sequence_each_by_hand() {
        use isoflop_core::choice::ChoiceItem;
        use isoflop_data::ByteTokenizer;
        // `seeded` draws its initial weights under the init lock itself.
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = Transformer::seeded(&vs.root(), &crate::model::tests::tiny_shape(), 3).unwrap();
        // Far from uniform predictions, so that a wrong position or target shows.
        tch::no_grad(|| {
            for mut p in vs.trainable_variables() {
                let _ = p.g_mul_scalar_(8.0);
            }
        });
        let item = |context: &str, delimiter: &str, choices: &[&str]| ChoiceItem {
            id: "t/1".into(),
            subset: "s".into(),
            context: context.into(),
            delimiter: delimiter.into(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            gold: 0,
        };
        let items = vec![
            // Letters: the choices share one row.
            item("Q?\nA. x\nB. y\nAnswer:", " ", &["A", "B", "C", "D"]),
            // Longer continuations of different lengths, a context with trailing whitespace.
            item("Is it so? ", "", &["Yes, it is", "No"]),
            // A context longer than the window (seq_len 16) is cut from the left.
            item("a long context that is well past sixteen bytes:", " ", &["one", "three"]),
            // An empty context scores after the end-of-text token.
            item("", " ", &["x", "yz"]),
        ];
        let tok = ByteTokenizer;
        for budget in [1, 16, 1 << 12] {
            let mut calls = Vec::new();
            let lls = score_choices(&model, &tok, &items, budget, Device::Cpu, &mut |d, t| {
                calls.push((d, t));
                Control::Continue
            })
            .unwrap()
            .unwrap();
            for (it, ll) in items.iter().zip(&lls) {
                for (c, v) in ll.iter().enumerate() {
                    let (ctx, cont) = isoflop_data::tasks::encode_choice(&tok, &it.context, &it.continuation(c));
                    let want = by_hand(&model, &ctx, &cont);
                    assert!(
                        (v - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "budget {budget}, {:?} choice {c}: {v} vs {want}",
                        it.context
                    );
                }
            }
            let spread =
                lls[0].iter().cloned().fold(f64::NEG_INFINITY, f64::max) - lls[0].iter().cloned().fold(f64::INFINITY, f64::min);
            assert!(spread > 0.5, "the letters' log-likelihoods differ: {:?}", lls[0]);
            // 4 letters on one row, then 2 + 2 + 2 rows.
            assert_eq!(calls.last(), Some(&(7, 7)), "budget {budget}");
        }
        // Asked to stop, it stops.
        let stopped = score_choices(&model, &tok, &items, 1, Device::Cpu, &mut |d, _| {
            if d >= 2 { Control::Stop } else { Control::Continue }
        })
        .unwrap();
        assert!(stopped.is_none());
        // A continuation longer than the window is refused.
        let long = vec![item("Q", " ", &["a", &"z".repeat(40)])];
        let e = score_choices(&model, &tok, &long, 64, Device::Cpu, &mut |_, _| Control::Continue).unwrap_err();
        assert!(e.to_string().contains("choice 1 is 41 tokens, outside 1..=16"), "{e}");
    }

    #[test]
    fn window_plan() {
        // 1000 tokens, windows of 129: 999 / 128 = 7 fit.
        assert_eq!(eval_windows(1000, 128, 1 << 20), Some((7, 129)));
        // The budget limits it, but at least one window is scored.
        assert_eq!(eval_windows(1000, 128, 300), Some((2, 129)));
        assert_eq!(eval_windows(1000, 128, 10), Some((1, 129)));
        // Exactly one window fits.
        assert_eq!(eval_windows(129, 128, 1 << 20), Some((1, 129)));
        // Short shards give one shorter window; too short gives none.
        assert_eq!(eval_windows(50, 128, 1 << 20), Some((1, 50)));
        assert_eq!(eval_windows(1, 128, 1 << 20), None);
    }
}
