"""The peer of `isoflop bench fit`: the Chinchilla approach-3 fit exactly as Hoffmann et al.
and Besiroglu et al. run it, in SciPy.

log L(N, D) = LSE(a - alpha log N, b - beta log D, e), fitted to log loss with the Huber loss
(delta 1e-3, summed over points) by L-BFGS-B from the 4,500-start grid
alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1}; a, b in {0, 5, ..., 25}.
The gradient is analytic (as in isoflop). Same two stages as isoflop: every start runs with
L-BFGS-B's default tolerances, then the 16 lowest are polished with tight tolerances (ftol 1e-15,
gtol 1e-10). Starts run in `--workers` processes.

Usage: python scipy_fit.py FILE.csv [--workers N]   (CSV columns: params, tokens, loss)
Prints one JSON line: seconds, objective, theta, starts_at_best.
"""
import argparse
import csv
import itertools
import json
import multiprocessing
import time

import numpy as np
from scipy.optimize import minimize

DELTA = 1e-3


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["params"]) for r in rows])
    d = np.array([float(r["tokens"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    return np.log(n), np.log(d), np.log(loss)


def objective(theta, log_n, log_d, log_l):
    a, b, e, alpha, beta = theta
    t0 = a - alpha * log_n
    t1 = b - beta * log_d
    t2 = np.full_like(log_n, e)
    m = np.maximum(np.maximum(t0, t1), t2)
    w0, w1, w2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(t2 - m)
    s = w0 + w1 + w2
    pred = m + np.log(s)
    r = pred - log_l
    small = np.abs(r) <= DELTA
    value = np.where(small, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA)).sum()
    dr = np.where(small, r, DELTA * np.sign(r))
    w0, w1, w2 = w0 / s * dr, w1 / s * dr, w2 / s * dr
    grad = np.array([w0.sum(), w1.sum(), w2.sum(), -(w0 * log_n).sum(), -(w1 * log_d).sum()])
    return value, grad


def grid():
    alphas = [0.0, 0.5, 1.0, 1.5, 2.0]
    es = [-1.0, -0.5, 0.0, 0.5, 1.0]
    abs_ = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    return [(a, b, e, al, be) for a, b, e, al, be in itertools.product(abs_, abs_, es, alphas, alphas)]


_DATA = None


def _init(data):
    global _DATA
    _DATA = data


def _screen(start):
    r = minimize(objective, np.array(start), args=_DATA, jac=True, method="L-BFGS-B")
    return float(r.fun), [float(x) for x in r.x]


def _polish(start):
    r = minimize(objective, np.array(start), args=_DATA, jac=True, method="L-BFGS-B",
                 options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    return float(r.fun), [float(x) for x in r.x]


POLISH = 16


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    data = load(args.csv)
    starts = grid()
    assert len(starts) == 4500
    t0 = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.Pool(args.workers, initializer=_init, initargs=(data,)) as pool:
            screened = pool.map(_screen, starts, chunksize=64)
            seeds = [r[1] for r in sorted(screened, key=lambda r: r[0])[:POLISH]]
            polished = pool.map(_polish, seeds)
    else:
        _init(data)
        screened = [_screen(s) for s in starts]
        seeds = [r[1] for r in sorted(screened, key=lambda r: r[0])[:POLISH]]
        polished = [_polish(s) for s in seeds]
    seconds = time.perf_counter() - t0
    best = min(polished, key=lambda r: r[0])
    at_best = sum(1 for r in screened if r[0] - best[0] <= 1e-6 * abs(best[0]) + 1e-12)
    print(json.dumps({"seconds": seconds, "objective": best[0], "theta": best[1], "starts_at_best": at_best,
                      "starts": len(starts), "workers": args.workers, "points": int(len(data[0]))}))


if __name__ == "__main__":
    main()
