"""What machine the benchmark runs on, and its two ceilings.

The ceilings come from the native probes ``nnkern._cpu.peak_gflops(threads,
seconds)`` (an FMA loop, GFLOP/s) and ``nnkern._cpu.copy_bandwidth(threads,
nbytes)`` (a STREAM-like copy, GB/s). Where the native module lacks them,
the numbers saved by ``nnkern bench --probe`` in ``bench/machine.json`` are
used; failing both, "%% of peak" is reported as "—".
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

import nnkern

PEAK_SECONDS = 0.3
# Copy buffers well past the L2 of a core; large enough that the copy streams from memory.
COPY_BYTES = 1 << 27
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MACHINE_JSON = Path("bench") / "machine.json"


def process_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        return "?"


def nnkern_info() -> Dict[str, Any]:
    try:
        return nnkern.info()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def openblas_warnings() -> list:
    """Environment variables that slow NumPy's OpenBLAS and can no longer be undone in this process."""
    return [f"{v}={os.environ[v]} is set: NumPy's OpenBLAS was loaded with it and may be slowed; "
            f"run as 'env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nnkern bench ...'"
            for v in OPENBLAS_VARS if v in os.environ]


def describe_machine(torch: Any, threads: int) -> Dict[str, Any]:
    info = nnkern_info()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpus": process_cpus(),
        "cpu_count": os.cpu_count(),
        "isa": info.get("cpu_isa", "?"),
        "threads": threads,
        "python": platform.python_version(),
        "versions": {"nnkern": nnkern.__version__, "numpy": np.__version__,
                     "torch": getattr(torch, "__version__", None)},
        "numpy_blas": numpy_blas(),
        "env": {v: os.environ[v] for v in (*OPENBLAS_VARS, "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                           "NNKERN_NUM_THREADS", "NNKERN_ISA") if v in os.environ},
        "nnkern_info": info,
    }


def _native_probes():
    try:
        cpu = importlib.import_module("nnkern._cpu")
    except ImportError:
        return None, None
    return getattr(cpu, "peak_gflops", None), getattr(cpu, "copy_bandwidth", None)


def measure_ceilings(threads: int, probe: bool = True) -> Dict[str, Any]:
    """``{"peak_gflops", "copy_gbs", "source"}`` for ``threads``: measured (when ``probe``), else saved, else None."""
    peak_fn, copy_fn = _native_probes() if probe else (None, None)
    result: Dict[str, Any] = {"peak_gflops": None, "copy_gbs": None, "source": {}}
    errors = {}
    for key, fn, arg in (("peak_gflops", peak_fn, PEAK_SECONDS), ("copy_gbs", copy_fn, COPY_BYTES)):
        if fn is None:
            continue
        try:
            result[key] = float(fn(threads, arg))
            result["source"][key] = "measured"
        except Exception as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
    saved = load_saved_ceilings(threads)
    for key in ("peak_gflops", "copy_gbs"):
        if result[key] is None and saved.get(key) is not None:
            result[key] = float(saved[key])
            result["source"][key] = str(saved["path"])
    if errors:
        result["errors"] = errors
    return result


def machine_json_candidates() -> list:
    here = Path(__file__).resolve()
    return [Path.cwd() / MACHINE_JSON, here.parents[3] / MACHINE_JSON]  # <repo>/bench from python/nnkern/bench


def load_saved_ceilings(threads: int) -> Dict[str, Any]:
    for path in machine_json_candidates():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entry = data.get("ceilings", {}).get(str(threads))
        if entry:
            return {**entry, "path": path}
    return {}


def probe(path: Optional[str], thread_counts: list) -> Dict[str, Any]:
    """Measure both ceilings at each thread count; save them to ``path`` (bench/machine.json) if given."""
    peak_fn, copy_fn = _native_probes()
    if peak_fn is None or copy_fn is None:
        raise RuntimeError("the native probes nnkern._cpu.peak_gflops / copy_bandwidth are not available "
                           "in this build of nnkern")
    ceilings = {}
    for t in thread_counts:
        ceilings[str(t)] = {"peak_gflops": round(float(peak_fn(t, 1.0)), 1),
                            "copy_gbs": round(float(copy_fn(t, COPY_BYTES)), 1)}
    data = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu_model": cpu_model(),
            "cpus": process_cpus(), "isa": nnkern_info().get("cpu_isa", "?"), "copy_bytes": COPY_BYTES,
            "ceilings": ceilings}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


class CpuMonitor:
    """CPU time the *other* processes of the machine (and the hypervisor, as steal) took during a span.

    Read from ``/proc/stat`` and this process's CPU time; a benchmark row timed while something else
    ran is noisy, and the report says so. ``None`` where ``/proc/stat`` is absent.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return time.perf_counter(), (user + nice + system + irq + softirq) / hz, steal / hz, time.process_time()

    def stop(self) -> Optional[Dict[str, float]]:
        """``{"others", "steal"}``: fractions of the machine's CPUs since the start (or the last stop)."""
        end = self._read()
        start, self._start = self._start, end
        if start is None or end is None:
            return None
        wall = max(end[0] - start[0], 1e-9) * (os.cpu_count() or 1)
        others = (end[1] - start[1]) - (end[3] - start[3])
        return {"others": round(max(others, 0.0) / wall, 3), "steal": round((end[2] - start[2]) / wall, 3)}
