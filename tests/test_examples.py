"""The digits training example, run as a user would (needs scikit-learn: the 'examples' extra)."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")


def _train(*args):
    proc = subprocess.run([sys.executable, "-m", "nnkern.examples.digits", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    match = re.search(r"test accuracy ([\d.]+)%", proc.stdout)
    assert match, proc.stdout
    return float(match.group(1)), proc.stdout


def test_lenet_learns_and_saves(tmp_path):
    weights = tmp_path / "lenet.npz"
    acc, out = _train("--model", "lenet", "--epochs", "3", "--save", str(weights))
    assert acc > 90.0, out
    import nnkern
    from nnkern.models import LeNet5
    model = LeNet5()
    model.load_state_dict(nnkern.load(weights))
    assert np.isfinite(model.state_dict()["0.weight"]).all()


def test_gru_learns():
    acc, out = _train("--model", "gru", "--epochs", "8")
    assert acc > 85.0, out


def test_loss_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    _train("--model", "lstm", "--epochs", "1", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
