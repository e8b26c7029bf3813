"""Train a small model on scikit-learn's handwritten digits (1,797 8x8 images, shipped with scikit-learn).

    python -m nnkern.examples.digits --model lenet|resnet|lstm|gru [--epochs N] [--threads N]
                                     [--backend auto|cpu|numpy] [--save weights.npz] [--plot loss.png]

CNNs see the images upscaled to 32x32; the RNNs read them row by row (8 steps
of 8 features). The split (80/20) and the initialization are fixed by
``--seed``. Prints the test accuracy and the wall time.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Iterable, Optional, Sequence

import numpy as np

import nnkern
from nnkern import models, nn, optim

DEFAULTS = {  # epochs, learning rate, batch size: reach the accuracy targets on 2 cores
    "lenet": (12, 2e-3, 32),
    "resnet": (8, 2e-3, 32),
    "lstm": (30, 1e-2, 32),
    "gru": (30, 1e-2, 32),
}


def load_data(model: str, seed: int):
    """(x_train, y_train, x_test, y_test) as float32 arrays in the model's input layout."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install 'nnkern[examples]'")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (n, 8, 8), values in [0, 1]
    labels = digits.target.astype(np.int64)
    if model in ("lenet", "resnet"):
        x = np.kron(images, np.ones((4, 4), np.float32))[:, None]  # nearest-neighbour upscale to 1x32x32
    else:
        x = images  # 8 time steps of 8 features
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], labels[train], x[test], labels[test]


def build(model: str, seed: int) -> nn.Module:
    if model == "lenet":
        return models.LeNet5(10, seed=seed)
    if model == "resnet":
        return models.ResNet(10, widths=(16, 32, 64), seed=seed)
    return models.SequenceClassifier(8, 64, 10, cell=model, seed=seed)


def _progress(iterable: Iterable, total: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=False)
    except ImportError:
        return iterable


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    model.train()
    return correct / len(x)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnkern.examples.digits", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(DEFAULTS), default="lenet")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--backend", choices=["auto", "cpu", "numpy"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="PATH", help="write the trained weights (.npz)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the training loss (needs matplotlib)")
    args = p.parse_args(argv)
    epochs, lr, batch = DEFAULTS[args.model]
    epochs, lr, batch = args.epochs or epochs, args.lr or lr, args.batch_size or batch
    if args.threads:
        nnkern.set_num_threads(args.threads)

    x_train, y_train, x_test, y_test = load_data(args.model, args.seed)
    model = build(args.model, args.seed)
    crit = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(args.seed)
    losses = []
    start = time.perf_counter()
    with nnkern.use_backend(args.backend):
        for epoch in range(epochs):
            order = rng.permutation(len(x_train))
            batches = range(0, len(order), batch)
            running = 0.0
            for i in _progress(batches, len(batches), f"epoch {epoch + 1}/{epochs}"):
                idx = order[i:i + batch]
                opt.zero_grad()
                loss = crit(model(x_train[idx]), y_train[idx])
                model.backward(crit.backward())
                opt.step()
                losses.append(loss)
                running += loss * len(idx)
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {running / len(x_train):.4f}  "
                  f"{time.perf_counter() - start:6.1f} s", flush=True)
        acc = accuracy(model, x_test, y_test)
    wall = time.perf_counter() - start
    print(f"{args.model}: test accuracy {acc * 100:.2f}% ({len(y_test)} images), wall time {wall:.1f} s, "
          f"backend {args.backend}, {nnkern.get_num_threads()} threads")
    if args.save:
        nnkern.save(model, args.save)
        print(f"weights written to {args.save}")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib: pip install 'nnkern[bench]'", file=sys.stderr)
            return 1
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(losses, lw=0.8)
        ax.set(xlabel="step", ylabel="training loss", yscale="log", title=f"{args.model} on digits")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"loss curve written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
