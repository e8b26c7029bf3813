"""The command line: ``python -m nnkern info`` and a smoke run of ``nnkern bench``."""
from __future__ import annotations

import json
import subprocess
import sys

import nnkern as nk


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nnkern", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def test_info_dict():
    info = nk.info()
    for key in ("version", "cpu_isa", "num_threads", "cuda_compiled", "native_ops", "build"):
        assert key in info
    assert info["cpu_isa"] in ("avx512", "avx2", "scalar")
    assert info["num_threads"] >= 1
    assert "relu" in info["native_ops"]["cpu"]


def test_info_command():
    proc = run("info")
    assert proc.returncode == 0, proc.stderr
    assert "cpu_isa" in proc.stdout and "native_ops" in proc.stdout


def test_bench_smoke(tmp_path):
    """Every row of the suite, every contender, once, at tiny sizes; with torch installed, the pooling
    and batch-norm rows also run PyTorch on channels_last copies, checked against NCHW PyTorch."""
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = run("bench", "--smoke", "--json", str(out), "--markdown", str(md))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["rows"], "no rows were run"
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    layout_rows = {"P1", "P1b", "P2", "B1", "B1b", "B2"}
    for row in data["rows"]:
        cl = row["contenders"].get("torch_channels_last")
        if row["id"] not in layout_rows:
            assert cl is None, row["id"]
            continue
        assert cl is not None and cl["status"] == "ok", (row["id"], cl)
        assert row["check"]["torch_channels_last"]["ok"], row["check"]
        assert row["speedup_vs_torch_channels_last"] > 0
    layout_part = md.read_text().split("## PyTorch on channels_last")[1]
    assert {line.split("|")[1].strip() for line in layout_part.splitlines() if line.startswith("| ")} \
        >= layout_rows


def test_use_backend_is_scoped():
    import numpy as np
    x = np.linspace(-1, 1, 7, dtype=np.float32)
    with nk.use_backend("numpy"):
        from nnkern._config import default_backend
        assert default_backend() == "numpy"
        assert np.array_equal(nk.relu(x), np.maximum(x, 0))
    assert default_backend() == "auto"
