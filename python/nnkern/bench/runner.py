"""``nnkern bench``: run the suite of BENCH.md against the NumPy backend and PyTorch, in one process."""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

import nnkern

from . import machine, report, suite
from .timing import SETTLE_S, Timing, describe, measure

CONTENDERS = ("nnkern", "numpy", "torch", "torch_channels_last")
# Relative difference (2-norm) above which a contender's result is flagged as differing from the reference.
# A sanity check of the benchmark's wiring only: accuracy is what tests/ check.
CHECK_TOL = 2e-3
DEFAULT_REPEATS = 7
QUICK_REPEATS = 5
# One contender's sampling time on one row is capped at this (slow NumPy rows get fewer rounds, >= 3).
BUDGET_S = {"full": 4.0, "quick": 1.5}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnkern bench",
        description="Time nnkern against its NumPy backend and PyTorch on the rows of BENCH.md, in one process, "
                    "interleaving the contenders. Run as 'env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
                    "nnkern bench ...' where those variables are set.")
    p.add_argument("--quick", action="store_true",
                   help=f"a subset ({','.join(suite.QUICK)}) with fewer rounds: about a minute")
    p.add_argument("--rows", metavar="IDS", help="comma-separated row ids, e.g. C1,L1b (see --list)")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--smoke", action="store_true",
                   help="every selected row (default: all) at tiny sizes, each contender once; exit 1 if any "
                        "contender fails or disagrees (for CI)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for nnkern and torch (default: every CPU this process may use)")
    p.add_argument("--repeats", type=int, metavar="K",
                   help=f"interleaved rounds (default {DEFAULT_REPEATS}, {QUICK_REPEATS} with --quick)")
    p.add_argument("--min-sample-ms", type=float, default=20.0, metavar="MS",
                   help="each sample repeats the call until it lasts this long (default 20)")
    p.add_argument("--settle-ms", type=float, default=1e3 * SETTLE_S, metavar="MS",
                   help="idle time before each sample, for the previous contender's spinning BLAS/OpenMP "
                        f"threads to sleep (default {1e3 * SETTLE_S:.0f})")
    p.add_argument("--warmup-calls", type=int, default=1, metavar="N",
                   help="untimed calls after the settle, before each sample's timed calls (default 1: the first "
                        "call after an idle spell runs slow on this VM, for every contender)")
    p.add_argument("--json", metavar="PATH", help="write machine info, ceilings and every sample as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown (bench/RESULTS.md)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the speedups (needs matplotlib)")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy-backend peer")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--probe", nargs="?", const=str(machine.MACHINE_JSON), metavar="PATH",
                   help="measure the FMA peak and copy bandwidth at 1 and N threads, save them to PATH "
                        f"(default {machine.MACHINE_JSON}) and exit")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    return p


class Progress:
    """One line on stderr, rewritten in place on a terminal; row-level lines only otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, msg: str, detail: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + msg[:150])
        elif not detail:
            self.stream.write(msg + "\n")
        else:
            return
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _import_torch(skip: bool):
    if skip:
        return None, "skipped (--no-torch)"
    try:
        import torch
    except Exception as exc:
        return None, f"not available ({describe(exc)})"
    return torch, ""


def _set_threads(n: int, torch: Any) -> Dict[str, Any]:
    """Give nnkern, torch and (when threadpoolctl is installed) NumPy's BLAS ``n`` threads."""
    state: Dict[str, Any] = {"warnings": []}
    try:
        nnkern.set_num_threads(n)
    except Exception as exc:
        state["warnings"].append(f"nnkern.set_num_threads({n}) failed: {describe(exc)}")
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        state["limiter"] = threadpool_limits(limits=n, user_api="blas")
        state["numpy_threads"] = str(n)
    except ImportError:
        state["numpy_threads"] = "its default (install threadpoolctl to set it)"
        if n < machine.process_cpus():
            state["warnings"].append(f"--threads {n}: NumPy's BLAS keeps its own thread count "
                                     "(install threadpoolctl, or set OPENBLAS_NUM_THREADS before starting)")
    return state


def _native_ops() -> Optional[set]:
    try:
        return set(nnkern.info()["native_ops"]["cpu"])
    except Exception:
        return None


def _first_array(out: Any) -> Optional[np.ndarray]:
    """The main result of a contender's call, as float64 (the first array of a tuple of gradients)."""
    while isinstance(out, (tuple, list)):
        out = next((o for o in out if o is not None), None)
    if out is None:
        return None
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out, dtype=np.float64)


def cross_check(timings: Dict[str, Timing]) -> Dict[str, Dict[str, Any]]:
    """Compare each contender's warm-up result with torch's (else numpy's)."""
    ok = {n: t for n, t in timings.items() if t.status == "ok"}
    ref_name = next((n for n in ("torch", "numpy") if n in ok), None)
    if ref_name is None:
        return {}
    ref = _first_array(ok[ref_name].output)
    checks = {}
    for name, t in ok.items():
        if name == ref_name:
            continue
        a = _first_array(t.output)
        if a is None or ref is None or a.shape != ref.shape:
            checks[name] = {"against": ref_name, "ok": False, "rel_err": None,
                            "detail": f"shape {None if a is None else a.shape} vs "
                                      f"{None if ref is None else ref.shape}"}
            continue
        rel = float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))
        good = bool(rel <= CHECK_TOL)
        checks[name] = {"against": ref_name, "ok": good, "rel_err": rel,
                        "detail": f"relative error {rel:.2e} > {CHECK_TOL:g}" if not good else ""}
    return checks


def row_result(row: suite.Row, shape: str, work: float, timings: Dict[str, Timing], ceilings: Dict[str, Any],
               native: Optional[set]) -> Dict[str, Any]:
    med = {n: t.median_ms for n, t in timings.items()}
    nk = med.get("nnkern")

    def speedup(peer):
        return med[peer] / nk if nk and med.get(peer) else None
    rate = work / (nk * 1e-3) / 1e9 if nk else None
    ceiling = ceilings.get("peak_gflops" if row.metric == "flop" else "copy_gbs")
    pct = 100 * rate / ceiling if rate and ceiling else None
    sp_np, sp_t, sp_tcl = speedup("numpy"), speedup("torch"), speedup("torch_channels_last")
    if row.target_peak is not None:
        meets = None if pct is None else pct >= 100 * row.target_peak
    else:
        meets = None if sp_t is None or row.target_vs_torch is None else sp_t >= row.target_vs_torch
    meets_np = None if sp_np is None or row.target_vs_numpy is None else sp_np >= row.target_vs_numpy
    return {
        "id": row.id, "op": row.op, "shape": shape, "metric": row.metric, "work": work,
        "work_unit": "FLOP" if row.metric == "flop" else "byte",
        "targets": {"vs_torch": row.target_vs_torch, "vs_numpy": row.target_vs_numpy, "peak": row.target_peak,
                    "text": row.target_text()},
        "torch_ref_ms_bench_md": row.torch_ref_ms,
        "contenders": {n: {"status": t.status, "reason": t.reason, "median_ms": t.median_ms,
                           "min_ms": t.min_ms,                           "samples_ms": t.samples_ms, "iters_per_sample": t.iters, "rounds": t.rounds,
                           "warmup_ms": t.warmup_ms} for n, t in timings.items()},
        "speedup_vs_numpy": sp_np, "speedup_vs_torch": sp_t, "speedup_vs_torch_channels_last": sp_tcl,
        "nnkern_rate": rate, "rate_unit": "GFLOP/s" if row.metric == "flop" else "GB/s", "pct_peak": pct,
        "meets_target": meets, "meets_numpy_target": meets_np,
        "ops": list(row.ops),
        "numpy_fallback_ops": None if native is None else [o for o in row.ops if o not in native],
        "check": cross_check(timings),
    }


def _failures(results: List[Dict[str, Any]]) -> List[str]:
    bad = []
    for r in results:
        for name, c in r["contenders"].items():
            if c["status"] != "ok":
                bad.append(f"{r['id']} {name}: {c['reason']}")
        for name, chk in r["check"].items():
            if not chk["ok"]:
                bad.append(f"{r['id']} {name}: differs from {chk['against']}: {chk['detail']}")
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.list:
        for r in suite.ROWS:
            print(f"{r.id:4s} {r.op:34s} {r.case().shape}")
        return 0
    threads = args.threads or machine.process_cpus()
    if threads < 1:
        print("nnkern bench: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.warmup_calls < 0:
        print("nnkern bench: --warmup-calls must be >= 0", file=sys.stderr)
        return 2
    if args.probe:
        try:
            data = machine.probe(args.probe, sorted({1, threads}))
        except Exception as exc:
            print(f"nnkern bench --probe: {describe(exc)}", file=sys.stderr)
            return 1
        for t, c in data["ceilings"].items():
            print(f"{t} thread(s): FMA peak {c['peak_gflops']} GFLOP/s, copy {c['copy_gbs']} GB/s")
        print(f"saved to {args.probe}")
        return 0
    try:
        ids = [i.strip() for i in args.rows.split(",") if i.strip()] if args.rows else None
        rows = suite.select(ids if ids is not None else (suite.QUICK if args.quick and not args.smoke else None))
    except ValueError as exc:
        print(f"nnkern bench: {exc}", file=sys.stderr)
        return 2

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    torch, torch_note = _import_torch(args.no_torch)
    enabled = [c for c in CONTENDERS
               if not (c == "numpy" and args.no_numpy) and not (c.startswith("torch") and torch is None)]
    thread_state = _set_threads(threads, torch)
    progress = Progress()
    progress("measuring the machine's ceilings")
    ceilings = machine.measure_ceilings(threads, probe=not args.smoke)
    warnings = machine.openblas_warnings() + thread_state["warnings"]
    if torch is None:
        warnings.append(f"torch {torch_note}: the torch column is empty")
    meta = {
        "mode": mode, "argv": list(sys.argv[1:] if argv is None else argv), "repeats": 1 if args.smoke else repeats,
        "min_sample_ms": args.min_sample_ms, "settle_ms": 0.0 if args.smoke else args.settle_ms,
        "warmup_calls": 0 if args.smoke else args.warmup_calls, "seed": args.seed, "contenders": enabled,
        "machine": machine.describe_machine(torch, threads), "ceilings": ceilings,
        "numpy_threads": thread_state["numpy_threads"], "warnings": warnings, "check_tolerance": CHECK_TOL,
    }
    progress.clear()
    print("\n".join(report.header_lines(meta)), flush=True)

    native = _native_ops()
    monitor = machine.CpuMonitor()
    results: List[Dict[str, Any]] = []
    for i, row in enumerate(rows, 1):
        where = f"[{i}/{len(rows)}] {row.id} {row.op}"
        progress(where)
        try:
            case = row.case(smoke=args.smoke, seed=args.seed)
            factories = {n: f for n, f in case.factories.items() if n in enabled}
            timings = measure(factories, repeats=repeats, min_sample_s=args.min_sample_ms / 1e3,
                              budget_s=BUDGET_S["quick" if args.quick else "full"],
                              settle_s=args.settle_ms / 1e3, warmup_calls=args.warmup_calls, smoke=args.smoke,
                              progress=lambda msg: progress(f"{where}: {msg}", detail=True))
            shape, work = case.shape, case.work
        except Exception as exc:  # the inputs themselves could not be built
            reason = describe(exc)
            timings = {n: Timing(status="n/a", reason=reason) for n in enabled}
            shape, work = "?", 0.0
        results.append(row_result(row, shape, work, timings, ceilings, native))
        results[-1]["cpu_contention"] = monitor.stop()
        del timings
        gc.collect()
    progress.clear()

    print("\n".join(report.results_lines(results)), flush=True)
    if args.json:
        report.write_json(args.json, meta, results)
    if args.markdown:
        report.write_markdown(args.markdown, meta, results)
    if args.plot:
        err = report.write_plot(args.plot, meta, results)
        if err:
            print(f"nnkern bench: {err}", file=sys.stderr)
    if args.smoke:
        bad = _failures(results)
        if bad:
            print("nnkern bench --smoke: FAILED\n  " + "\n  ".join(bad), file=sys.stderr)
            return 1
    return 0
