"""Timing one row's contenders in one process, interleaved (BENCH.md's method).

1. Build each contender (its factory) and warm it up with one call; a
   contender that raises is "n/a" with the reason, and the others go on.
2. Calibrate once: the number of inner iterations that makes one sample
   last at least ``min_sample_s`` (20 ms), from the time of one call.
3. Run ``repeats`` rounds, A B C A B C ..., one sample per contender per
   round, so that the machine's drift falls on every contender alike.
   A contender whose samples are slow (the NumPy reference on recurrent
   rows takes seconds) gets fewer rounds, never below ``MIN_ROUNDS``,
   spread evenly over the rounds of the others.

Each sample then starts with ``warmup_calls`` untimed calls (default 1;
calls slower than ``SLOW_CALL_S`` skip it): BENCH.md times runs "after a
warm-up", and on this VM the first call after an idle spell runs at about
half speed for every contender (its CPU time, not only its wall time, grows:
E2 9 ms back to back, 15-20 ms after 200 ms of sleep; C2 3.5 vs 7-16 ms),
which would make every sample measure the VM's wake-up instead of the kernel.

Before every sample (and every calibration call) the harness sleeps
``settle_s`` (200 ms): a BLAS or OpenMP thread pool keeps its workers
spinning for a while after a call (OpenBLAS for about 2**28 cycles, ~0.1 s),
and those spinning workers take cores from whichever contender runs next.
Measured on this 2-core machine: torch.mm 1024^3 ran in 8.6 ms alone, 23 ms
right after a NumPy matmul, 10.7 ms after 0.1 s of idle and 8.5 ms after 0.2 s.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

MIN_ROUNDS = 3
MAX_ITERS = 100_000
# One call slower than this is not repeated for calibration: the warm-up call's time is used.
SLOW_CALL_S = 0.25
# Idle time before each sample, for the previous contender's spinning thread pool to go to sleep.
SETTLE_S = 0.2


@dataclass
class Timing:
    """One contender's measurement on one row."""

    status: str = "ok"                 # "ok" or "n/a"
    reason: str = ""
    warmup_ms: float = float("nan")
    iters: int = 0
    rounds: int = 0
    samples_ms: List[float] = field(default_factory=list)   # ms per call, one per round
    output: Any = field(default=None, repr=False)            # the warm-up call's result (for the cross-check)

    @property
    def median_ms(self) -> Optional[float]:
        return statistics.median(self.samples_ms) if self.status == "ok" and self.samples_ms else None

    @property
    def min_ms(self) -> Optional[float]:
        return min(self.samples_ms) if self.status == "ok" and self.samples_ms else None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sample(fn: Callable[[], Any], iters: int) -> float:
    """Seconds per call over ``iters`` calls, with the garbage collector paused."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters
    finally:
        if gc_was_on:
            gc.enable()


def _calibrate(fn: Callable[[], Any], min_sample_s: float) -> float:
    """Seconds per call: the fastest of up to 3 single calls, stopping once they add up to ``min_sample_s``
    (the fastest, so that one slow outlier does not shrink the samples or the rounds)."""
    times: List[float] = []
    while len(times) < 3 and sum(times) < min_sample_s:
        times.append(_sample(fn, 1))
    return min(times)


def _rounds_plan(rounds: int, repeats: int) -> List[bool]:
    """``rounds`` True entries spread evenly over ``repeats`` slots."""
    return [(i + 1) * rounds // repeats > i * rounds // repeats for i in range(repeats)]


def measure(factories: Dict[str, Callable[[], Callable[[], Any]]], *, repeats: int, min_sample_s: float = 0.02,
            budget_s: float = 3.0, settle_s: float = SETTLE_S, warmup_calls: int = 1, smoke: bool = False,
            progress: Callable[[str], None] = lambda _: None) -> Dict[str, Timing]:
    """Time every contender of one row. ``budget_s`` caps one contender's total sampling time
    (down to ``MIN_ROUNDS`` rounds); ``settle_s`` is the idle time before each sample, followed by
    ``warmup_calls`` untimed calls (not for calls slower than ``SLOW_CALL_S``); ``smoke`` runs each
    contender once (warm-up) and takes one one-call sample, without settling."""
    if smoke:
        settle_s = 0.0
        warmup_calls = 0
    timings: Dict[str, Timing] = {name: Timing() for name in factories}
    calls: Dict[str, Callable[[], Any]] = {}
    for name, factory in factories.items():
        progress(f"{name}: warm-up")
        t = timings[name]
        try:
            fn = factory()
            t0 = time.perf_counter()
            t.output = fn()
            t.warmup_ms = (time.perf_counter() - t0) * 1e3
        except Exception as exc:  # a missing op, a wrong shape: this contender alone is n/a
            t.status, t.reason = "n/a", describe(exc)
            continue
        calls[name] = fn

    per_call: Dict[str, float] = {}
    for name, fn in calls.items():
        t = timings[name]
        if smoke:
            t.iters = 1
            continue
        progress(f"{name}: calibrating")
        try:
            time.sleep(settle_s)
            one = t.warmup_ms / 1e3 if t.warmup_ms / 1e3 > SLOW_CALL_S else _calibrate(fn, min_sample_s)
        except Exception as exc:
            t.status, t.reason = "n/a", describe(exc)
            continue
        per_call[name] = one
        t.iters = max(1, min(MAX_ITERS, math.ceil(min_sample_s / max(one, 1e-9))))

    live = [n for n in calls if timings[n].status == "ok"]
    repeats = 1 if smoke else max(1, repeats)
    plans = {}
    for name in live:
        t = timings[name]
        sample_s = per_call.get(name, 0.0) * t.iters
        t.rounds = repeats
        if sample_s * repeats > budget_s:
            t.rounds = min(repeats, max(MIN_ROUNDS, int(budget_s / max(sample_s, 1e-9))))
        plans[name] = _rounds_plan(t.rounds, repeats)

    for rnd in range(repeats):
        for name in live:
            t = timings[name]
            if t.status != "ok" or not plans[name][rnd]:
                continue
            progress(f"{name}: round {rnd + 1}/{repeats} ({t.iters} call{'s' if t.iters > 1 else ''}/sample)")
            try:
                time.sleep(settle_s)
                if per_call.get(name, 0.0) <= SLOW_CALL_S:
                    for _ in range(warmup_calls):
                        calls[name]()
                t.samples_ms.append(_sample(calls[name], t.iters) * 1e3)
            except Exception as exc:
                t.status, t.reason = "n/a", describe(exc)
    return timings
