"""Independent reference for the Marin IsoFLOP grid (../shared/MARIN_GRID.md), written in plain
Python from the published rules, so the Rust planner is checked against a second
implementation. Writes marin-2025-runs.tsv: one line per run of one corpus.

Usage: python3 tests/data/marin_grid.py > tests/data/marin-2025-runs.tsv
"""
import math

V, S = 128256, 4096
BUDGETS = [1e18, 3e18, 6e18, 1e19, 3e19, 6e19, 1e20]


def round_half_away(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def runs(corpus="dclm"):
    for budget in BUDGETS:
        step = 128 if budget <= 9e18 else 256
        for h in range(512, 4096 + 1, step):
            L = round_half_away(h / (64 + 4 * math.log2(h) - 9))
            H = max(1, h // 128)
            kv, hd, I = H, h // H, 4 * h
            mlp = 2 * 3 * h * I
            qkv = 2 * h * (H * hd + 2 * kv * hd)
            o = 2 * h * h
            attn = (2 * S * S * H * hd + 3 * S * S * H + 2 * S * S * hd * H) / S
            fpt = L * (mlp + qkv + o + attn) + 2 * h * V
            x = budget / (fpt * S * 65536)
            B = 1 if x <= 1 else 2 ** math.ceil(math.log2(x))
            lr = 0.33 * math.sqrt(B) / h
            while lr > 0.01:
                B = B // 2
                lr = 0.33 * math.sqrt(B) / h
            if B < 8:
                continue
            steps = round(budget / (fpt * S * B))
            achieved = fpt * S * B * steps
            if abs(achieved - budget) / budget > 0.01:
                continue
            params = L * (4 * h * h + 3 * h * I + 2 * h + 2 * hd) + h + 2 * V * h
            name = f"isoflop-{budget:.0e}-d{h}-L{L}-B{B}-{corpus}"
            yield name, budget, h, L, H, B, steps, B * steps * S, params, lr


if __name__ == "__main__":
    print("name\tbudget\thidden\tlayers\theads\tbatch\tsteps\ttokens\tparams\tlr")
    for r in runs():
        print("\t".join(repr(v) if isinstance(v, float) else str(v) for v in r))
