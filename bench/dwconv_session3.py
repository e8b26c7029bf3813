"""Depthwise 3x3 (rows C5 / C5b) against PyTorch, in one process, interleaved.

Times nnkern's forward, backward and each part of the backward (grad_input,
grad_weight, grad_bias) next to the same call in PyTorch, 2 threads each, and
prints medians and ratios (torch / nnkern). Run from the repository root:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/dwconv_session3.py [--rounds 15] [--threads 2]
        [--clock wall|process]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch

import nnkern
import nnkern.functional as F


CLOCK = time.perf_counter


def sample(fn: Callable[[], object], iters: int) -> float:
    """Milliseconds per call over ``iters`` calls, garbage collector paused."""
    gc.disable()
    try:
        t0 = CLOCK()
        for _ in range(iters):
            fn()
        return (CLOCK() - t0) / iters * 1e3
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=0.1, help="idle seconds before each sample")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="process: CPU time of the whole process (steadier on a shared machine at 1 thread)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    torch.set_num_threads(args.threads)
    nnkern.set_num_threads(args.threads)

    n, c, hw = 8, 128, 56
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    gy = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    tx, tw, tb, tgy = (torch.from_numpy(a.copy()) for a in (x, w, b, gy))
    txg, twg, tbg = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def nk_bwd(mask):
        return lambda: F.conv2d_backward(gy, x, w, 1, 1, 1, c, output_mask=mask, backend="cpu")

    def th_bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(tgy, tx, tw, [c], [1, 1], [1, 1], [1, 1], False, [0, 0],
                                                           c, list(mask))

    def nk_c5b():
        F.conv2d(x, w, b, padding=1, groups=c, backend="cpu")
        return F.conv2d_backward(gy, x, w, 1, 1, 1, c, output_mask=(True, True, True), backend="cpu")

    def th_c5b():
        y = torch.nn.functional.conv2d(txg, twg, tbg, 1, 1, 1, c)
        return torch.autograd.grad(y, (txg, twg, tbg), tgy)

    def th_fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, tb, 1, 1, 1, c)

    pairs: Dict[str, tuple] = {
        "C5 fwd": (lambda: F.conv2d(x, w, b, padding=1, groups=c, backend="cpu"), th_fwd),
        "bwd all": (nk_bwd((True, True, True)), th_bwd((True, True, True))),
        "grad_input": (nk_bwd((True, False, False)), th_bwd((True, False, False))),
        "grad_weight": (nk_bwd((False, True, False)), th_bwd((False, True, False))),
        "grad_bias": (nk_bwd((False, False, True)), th_bwd((False, False, True))),
        "C5b fwd+bwd": (nk_c5b, th_c5b),
    }
    # correctness cross-check of the timed calls
    got = F.conv2d(x, w, b, padding=1, groups=c, backend="cpu")
    np.testing.assert_allclose(got, th_fwd().numpy(), rtol=1e-4, atol=1e-4)
    gx, gw, gb = nk_bwd((True, True, True))()
    tgx, tgw, tgb = th_bwd((True, True, True))()
    for a, t in ((gx, tgx), (gw, tgw), (gb, tgb)):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-3, atol=1e-3)

    iters: Dict[str, List[int]] = {}
    for name, (a, t) in pairs.items():
        its = []
        for fn in (a, t):
            fn()
            t0 = time.perf_counter()
            fn()
            one = time.perf_counter() - t0
            its.append(max(1, int(0.03 / max(one, 1e-6))))
        iters[name] = its
    times: Dict[str, List[List[float]]] = {k: [[], []] for k in pairs}
    for _ in range(args.rounds):
        for name, fns in pairs.items():
            for i, fn in enumerate(fns):
                time.sleep(args.settle)
                times[name][i].append(sample(fn, iters[name][i]))
    # bytes each part must move at least: the forward and grad_input read one 12.8 MB tensor and write one,
    # grad_weight reads two, grad_bias one, the whole backward reads two and writes one, C5b: that + the forward
    plane = x.nbytes / 1e6
    moved = {"C5 fwd": 2, "bwd all": 3, "grad_input": 2, "grad_weight": 2, "grad_bias": 1, "C5b fwd+bwd": 5}
    # the bandwidth ceiling: the native copy probe (read + written) over a 12.8 MB buffer, same threads
    copy_gbs = nnkern._cpu.copy_bandwidth(args.threads, x.nbytes)
    print(f"threads={args.threads} rounds={args.rounds} clock={args.clock} isa={nnkern._cpu.isa()} "
          f"copy probe {copy_gbs:.1f} GB/s (12.8 MB, read + written)")
    print(f"{'part':<14}{'nnkern ms':>11}{'torch ms':>10}{'ratio':>8}{'nk GB/s':>9}{'% of copy':>11}")
    for name in pairs:
        a, t = statistics.median(times[name][0]), statistics.median(times[name][1])
        gbs = moved[name] * plane / a
        print(f"{name:<14}{a:>11.3f}{t:>10.3f}{t / a:>8.2f}{gbs:>9.1f}{100 * gbs / copy_gbs:>10.0f}%")
    print("GB/s: compulsory bytes / time, 12.8 MB per tensor read or written once (bwd all: x, grad_out, "
          "grad_input; C5b: + the forward's x and y)")


if __name__ == "__main__":
    main()
