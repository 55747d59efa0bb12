#!/usr/bin/env python3
"""Plain-PyTorch twin of `isoflop bench train`: the same model, step and tokens.

Model (as crates/isoflop-train/src/model.rs): token embedding, per block pre-norm RMSNorm,
bias-free q/k/v/o projections, optional per-head QK RMSNorm before RoPE (rotate-half layout),
causal scaled-dot-product attention, residual; pre-norm RMSNorm, SwiGLU MLP, residual; final
RMSNorm and an untied LM head. Init N(0, 0.02^2) for matrices/embeddings, ones for norms.

Step: zero grads (set to None), mean cross-entropy, backward, global grad-norm clipping at 1.0,
torch.optim.AdamW (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices only;
fused where available, else foreach).

Precision: fp32, or with --bf16 mixed precision as isoflop's `--bf16`: fp32 parameters, gradients
and AdamW state, the forward under torch.autocast(bfloat16) (matmuls and attention in bf16;
autocast keeps the cross-entropy in fp32), the backward following it.

Tokens: element i of the [batch, seq_len + 1] array is the i-th output of splitmix64 seeded with
`seed`, modulo vocab_size (inputs = [:, :-1], targets = [:, 1:]).

Threads: torch's default (all cores), unless --threads is given.

Prints one JSON line per mode (eager, compile). If torch.compile fails, the compile line says
so (`"error": ...`) instead of aborting.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

MASK = (1 << 64) - 1


def splitmix64_tokens(seed, n, vocab):
    state = seed & MASK
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z = z ^ (z >> 31)
        out.append(z % vocab)
    return out


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq_len, head_dim, theta):
    inv = [theta ** (-2.0 * i / head_dim) for i in range(head_dim // 2)]
    ang = torch.tensor([[p * f for f in inv] for p in range(seq_len)], dtype=torch.float64)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, h, heads, ffn, qk_norm, eps):
        super().__init__()
        self.heads, self.hd = heads, h // heads
        self.attn_norm = RMSNorm(h, eps)
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)
        self.q_norm = RMSNorm(self.hd, eps) if qk_norm else None
        self.k_norm = RMSNorm(self.hd, eps) if qk_norm else None
        self.mlp_norm = RMSNorm(h, eps)
        self.gate_proj = nn.Linear(h, ffn, bias=False)
        self.up_proj = nn.Linear(h, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, h, bias=False)

    def forward(self, x, cos, sin):
        b, t, h = x.shape
        y = self.attn_norm(x)

        def split(proj, norm):
            z = proj(y).view(b, t, self.heads, self.hd)
            if norm is not None:
                z = norm(z)
            return z.transpose(1, 2)

        q = apply_rope(split(self.q_proj, self.q_norm), cos, sin)
        k = apply_rope(split(self.k_proj, self.k_norm), cos, sin)
        v = split(self.v_proj, None)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(o.transpose(1, 2).reshape(b, t, h))
        y = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, v = cfg["hidden"], cfg["vocab_size"]
        ffn = cfg.get("ffn_hidden") or 4 * h
        eps = 1e-5
        self.vocab = v
        self.embed = nn.Embedding(v, h)
        self.layers = nn.ModuleList(
            Block(h, cfg["heads"], ffn, cfg.get("qk_norm", False), eps) for _ in range(cfg["layers"])
        )
        self.final_norm = RMSNorm(h, eps)
        self.lm_head = nn.Linear(h, v, bias=False)
        cos, sin = rope_tables(cfg["seq_len"], h // cfg["heads"], cfg.get("rope_theta", 10000.0))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, inputs, targets):
        t = inputs.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed(inputs)
        for blk in self.layers:
            x = blk(x, cos, sin)
        logits = self.lm_head(self.final_norm(x))
        return F.cross_entropy(logits.view(-1, self.vocab), targets.reshape(-1))


def make_optimizer(model, lr):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed")]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith("embed"))]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw), "foreach"


def run(cfg, args, mode):
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    model = Transformer(cfg).to(dev)
    opt, opt_kind = make_optimizer(model, args.lr)
    b, t = args.batch, cfg["seq_len"]
    toks = splitmix64_tokens(args.seed, b * (t + 1), cfg["vocab_size"])
    toks = torch.tensor(toks, dtype=torch.int64, device=dev).view(b, t + 1)
    inputs, targets = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    loss_fn = model
    if mode == "compile":
        loss_fn = torch.compile(model)

    def step():
        opt.zero_grad(set_to_none=True)
        if args.bf16:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = loss_fn(inputs, targets)
        else:
            loss = loss_fn(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.detach()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    loss_first = float("nan")
    for i in range(args.warmup):
        loss = step()
        if i == 0:
            loss_first = loss.item()
    sync()
    t0 = time.perf_counter()
    times = []
    for _ in range(args.steps):
        ts = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - ts)
    loss_last = loss.item()
    sync()
    secs = time.perf_counter() - t0
    tps = args.steps * b * t / secs
    h, layers, v = cfg["hidden"], cfg["layers"], cfg["vocab_size"]
    ffn = cfg.get("ffn_hidden") or 4 * h
    matmul = layers * (4 * h * h + 3 * h * ffn) + v * h
    flops_per_token = 6.0 * matmul + 12.0 * layers * h * t
    peak = args.peak_flops if args.peak_flops is not None else (989e12 if dev.type == "cuda" else 0.0)
    return {
        "impl": "torch-" + mode,
        "tokens_per_second": tps,
        "mfu": tps * flops_per_token / peak if peak > 0 else 0.0,
        "step_ms": secs * 1e3 / args.steps,
        # Per-step times only mean something where ops run synchronously (the CPU).
        "step_ms_median": None if dev.type == "cuda" else sorted(times)[len(times) // 2] * 1e3,
        "tokens_per_second_median": None if dev.type == "cuda" else b * t / sorted(times)[len(times) // 2],
        "device": dev.type,
        "params": sum(p.numel() for p in model.parameters()),
        "loss_first": loss_first,
        "loss_last": loss_last,
        "batch": b,
        "seq_len": t,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "optimizer": opt_kind,
        "precision": "bf16" if args.bf16 else "fp32",
        "torch": torch.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-json", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast with fp32 parameters")
    ap.add_argument("--peak-flops", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--modes", default="eager,compile")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with open(args.model_json) as f:
        cfg = json.load(f)
    for mode in args.modes.split(","):
        try:
            out = run(cfg, args, mode)
        except Exception as e:  # torch.compile may be unavailable (no compiler on the box)
            if mode != "compile":
                raise
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            out = {"impl": "torch-compile", "error": msg}
            print(f"torch.compile failed, skipped: {msg}", file=sys.stderr)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
