"""The layer API against torch.nn (weights loaded from the torch module's state_dict), losses and optimizers."""
from __future__ import annotations

import numpy as np
import pytest

import nnkern.nn as nn
from nnkern import models, optim
from helpers import assert_close

torch = pytest.importorskip("torch")
f64 = np.float64


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


# (id, nnkern factory, torch factory, input shape)
LAYERS = [
    ("conv2d", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=f64), lambda: torch.nn.Conv2d(3, 4, 3, 2, 1),
     (2, 3, 7, 6)),
    ("conv2d no bias groups", lambda: nn.Conv2d(4, 6, 3, padding="same", groups=2, bias=False, dtype=f64),
     lambda: torch.nn.Conv2d(4, 6, 3, padding="same", groups=2, bias=False), (2, 4, 5, 5)),
    ("conv1d", lambda: nn.Conv1d(3, 5, 3, padding=1, dtype=f64), lambda: torch.nn.Conv1d(3, 5, 3, padding=1),
     (2, 3, 9)),
    ("linear", lambda: nn.Linear(5, 3, dtype=f64), lambda: torch.nn.Linear(5, 3), (4, 5)),
    ("maxpool", lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), (2, 3, 9, 8)),
    ("avgpool", lambda: nn.AvgPool2d(2, ceil_mode=True), lambda: torch.nn.AvgPool2d(2, ceil_mode=True),
     (2, 3, 7, 7)),
    ("adaptive", lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: torch.nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 7, 8)),
    ("bn2d train", lambda: nn.BatchNorm2d(3, dtype=f64), lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    ("bn1d train", lambda: nn.BatchNorm1d(4, momentum=None, dtype=f64),
     lambda: torch.nn.BatchNorm1d(4, momentum=None), (6, 4)),
    ("relu", lambda: nn.ReLU(), lambda: torch.nn.ReLU(), (3, 7)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 7)),
    ("tanh", lambda: nn.Tanh(), lambda: torch.nn.Tanh(), (3, 7)),
    ("flatten", lambda: nn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4, 5)),
    # (no conv bias before batch norm: its gradient is exactly zero, only rounding noise remains)
    ("sequential cnn", lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False, dtype=f64), nn.BatchNorm2d(4, dtype=f64),
                                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3, dtype=f64)),
     lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)), (3, 1, 4, 4)),
]


def _copy_params_from_torch(mine, theirs):
    mine.load_state_dict(theirs.state_dict())


def _compare_param_grads(mine, theirs, what):
    ours = dict(mine.named_parameters())
    for name, p in theirs.named_parameters():
        assert name in ours, f"{what}: torch parameter {name} missing"
        assert_close(ours[name].grad, p.grad.numpy(), 1e-10, f"{what}: grad of {name}")


@pytest.mark.parametrize("make,make_torch,shape", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch(make, make_torch, shape, mode, rng):
    mine, theirs = make(), make_torch().double()
    assert list(mine.state_dict()) == list(theirs.state_dict()), "state_dict keys differ from torch's"
    if mode == "eval":  # non-trivial running statistics first
        for m in theirs.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.tensor(rng.standard_normal(m.num_features)))
                m.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, m.num_features)))
        mine.eval(), theirs.eval()
    _copy_params_from_torch(mine, theirs)
    x = rng.standard_normal(shape)
    tx = _t(x).requires_grad_(True)
    out = mine(x)
    tout = theirs(tx)
    assert_close(out, tout.detach().numpy(), 1e-10, "forward")
    g = rng.standard_normal(out.shape)
    gx = mine.backward(g)
    tout.backward(_t(g))
    assert_close(gx, tx.grad.numpy(), 1e-10, "grad input")
    _compare_param_grads(mine, theirs, "layer")
    for key, value in theirs.state_dict().items():  # running statistics updated alike
        assert_close(np.asarray(mine.state_dict()[key]), value.numpy(), 1e-10, f"state {key}")


def test_residual_block_matches_torch(rng):
    def block():
        return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False, dtype=f64), nn.BatchNorm2d(4, dtype=f64),
                             nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False, dtype=f64),
                             nn.BatchNorm2d(4, dtype=f64))
    mine = nn.Sequential(nn.Residual(block()), nn.ReLU(),
                         nn.Residual(block(), nn.Sequential(nn.Conv2d(4, 4, 1, bias=False, dtype=f64),
                                                            nn.BatchNorm2d(4, dtype=f64))))

    class TBlock(torch.nn.Module):
        def __init__(self, shortcut):
            super().__init__()
            self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
                                             torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
                                             torch.nn.BatchNorm2d(4))
            self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    theirs = torch.nn.Sequential(TBlock(None), torch.nn.ReLU(),
                                 TBlock(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1, bias=False),
                                                            torch.nn.BatchNorm2d(4)))).double()
    assert list(mine.state_dict()) == list(theirs.state_dict())
    _copy_params_from_torch(mine, theirs)
    x = rng.standard_normal((2, 4, 6, 6))
    tx = _t(x).requires_grad_(True)
    out, tout = mine(x), theirs(tx)
    assert_close(out, tout.detach().numpy(), 1e-10, "forward")
    g = rng.standard_normal(out.shape)
    gx = mine.backward(g)
    tout.backward(_t(g))
    assert_close(gx, tx.grad.numpy(), 1e-10, "grad input")
    _compare_param_grads(mine, theirs, "resnet block")


RNNS = [
    ("lstm 2 layers bidir", lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=f64),
     lambda: torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)),
    ("gru 2 layers bidir batch_first", lambda: nn.GRU(3, 4, 2, batch_first=True, bidirectional=True, dtype=f64),
     lambda: torch.nn.GRU(3, 4, 2, batch_first=True, bidirectional=True)),
    ("rnn relu no bias", lambda: nn.RNN(3, 4, bias=False, nonlinearity="relu", dtype=f64),
     lambda: torch.nn.RNN(3, 4, bias=False, nonlinearity="relu")),
]


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("make,make_torch", [c[1:] for c in RNNS], ids=[c[0] for c in RNNS])
def test_recurrent_layer_matches_torch(make, make_torch, with_state, rng):
    mine, theirs = make(), make_torch().double()
    assert list(mine.state_dict()) == list(theirs.state_dict())
    _copy_params_from_torch(mine, theirs)
    is_lstm = isinstance(mine, nn.LSTM)
    x = rng.standard_normal((2, 5, 3) if mine.batch_first else (5, 2, 3))
    tx = _t(x).requires_grad_(True)
    layers = mine.num_layers * (2 if mine.bidirectional else 1)
    hx = thx = None
    if with_state:
        h0 = rng.standard_normal((layers, 2, 4))
        th0 = _t(h0).requires_grad_(True)
        if is_lstm:
            c0 = rng.standard_normal((layers, 2, 4))
            tc0 = _t(c0).requires_grad_(True)
            hx, thx = (h0, c0), (th0, tc0)
        else:
            hx, thx = h0, th0
    out, state = mine(x, hx)
    tout, tstate = theirs(tx, thx)
    assert_close(out, tout.detach().numpy(), 1e-10, "output")
    g = rng.standard_normal(out.shape)
    gh = rng.standard_normal((layers, 2, 4))
    if is_lstm:
        gc = rng.standard_normal((layers, 2, 4))
        res = mine.backward(g, gh, gc)
        torch.autograd.backward([tout, tstate[0], tstate[1]], [_t(g), _t(gh), _t(gc)])
    else:
        res = mine.backward(g, gh)
        torch.autograd.backward([tout, tstate], [_t(g), _t(gh)])
    if with_state:
        gx, gstate = res
        if is_lstm:
            assert_close(gstate[0], thx[0].grad.numpy(), 1e-10, "grad h0")
            assert_close(gstate[1], thx[1].grad.numpy(), 1e-10, "grad c0")
        else:
            assert_close(gstate, thx.grad.numpy(), 1e-10, "grad h0")
    else:
        gx = res
    assert_close(gx, tx.grad.numpy(), 1e-10, "grad input")
    _compare_param_grads(mine, theirs, "rnn")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_cells_match_torch(kind, rng):
    mine = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](3, 4, dtype=f64)
    theirs = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[kind](3, 4).double()
    _copy_params_from_torch(mine, theirs)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    tx, th = _t(x).requires_grad_(True), _t(h).requires_grad_(True)
    g = rng.standard_normal((2, 4))
    if kind == "lstm":
        c = rng.standard_normal((2, 4))
        tc = _t(c).requires_grad_(True)
        (h1, c1), (th1, tc1) = mine(x, (h, c)), theirs(tx, (th, tc))
        gc = rng.standard_normal((2, 4))
        gx, (gh, gcp) = mine.backward(g, gc)
        torch.autograd.backward([th1, tc1], [_t(g), _t(gc)])
        assert_close(gcp, tc.grad.numpy(), 1e-10, "grad c")
    else:
        h1, th1 = mine(x, h), theirs(tx, th)
        gx, gh = mine.backward(g)
        th1.backward(_t(g))
    assert_close(h1, th1.detach().numpy(), 1e-10, "h'")
    assert_close(gx, tx.grad.numpy(), 1e-10, "grad x")
    assert_close(gh, th.grad.numpy(), 1e-10, "grad h")
    _compare_param_grads(mine, theirs, "cell")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_loss(smoothing, rng):
    logits, target = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    crit = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = crit(logits, target)
    tl = _t(logits).requires_grad_(True)
    tloss = torch.nn.functional.cross_entropy(tl, torch.as_tensor(target), label_smoothing=smoothing)
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-12
    assert_close(crit.backward(), tl.grad.numpy(), 1e-10, "grad logits")


def test_mse_loss(rng):
    p, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    crit = nn.MSELoss()
    loss = crit(p, t)
    tp = _t(p).requires_grad_(True)
    tloss = torch.nn.functional.mse_loss(tp, _t(t))
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-12
    assert_close(crit.backward(), tp.grad.numpy(), 1e-10, "grad pred")


OPTIMS = [
    ("sgd", lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("sgd momentum wd", lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("sgd nesterov", lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    ("adam", lambda p: optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    ("adam wd", lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1)),
    ("adamw", lambda p: optim.AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2)),
]


@pytest.mark.parametrize("make,make_torch", [c[1:] for c in OPTIMS], ids=[c[0] for c in OPTIMS])
def test_optimizer_matches_torch(make, make_torch, rng):
    w0 = rng.standard_normal((3, 4))
    p = nn.Parameter(w0.copy())
    tp = torch.nn.Parameter(_t(w0))
    opt, topt = make([p]), make_torch([tp])
    for _ in range(5):
        g = rng.standard_normal((3, 4))
        p.grad, tp.grad = g.copy(), _t(g)
        opt.step()
        topt.step()
    assert_close(p.data, tp.detach().numpy(), 1e-12, "parameters after 5 steps")


def test_state_dict_round_trip_into_torch(rng):
    mine = nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=1)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in mine.state_dict().items()})
    back = nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=2)
    back.load_state_dict(theirs.state_dict())
    for k, v in mine.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v)


def test_load_state_dict_reports_every_problem():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bad = dict(m.state_dict())
    bad["0.weight"] = np.zeros((5, 3), np.float32)
    del bad["1.bias"]
    bad["2.weight"] = np.zeros(3)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(bad)
    msg = str(info.value)
    assert "'0.weight'" in msg and "'1.bias'" in msg and "'2.weight'" in msg


def test_backward_needs_one_forward(rng):
    lin = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="without a forward"):
        lin.backward(np.ones((1, 2), np.float32))
    lin(rng.standard_normal((1, 3)).astype(np.float32))
    lin.backward(np.ones((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="twice"):
        lin.backward(np.ones((1, 2), np.float32))


def test_grads_accumulate_and_zero_grad(rng):
    lin = nn.Linear(3, 2, seed=0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = np.ones((4, 2), np.float32)
    lin(x), lin.backward(g)
    first = lin.weight.grad.copy()
    lin(x), lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, 2 * first, rtol=1e-6)
    lin.zero_grad()
    assert lin.weight.grad is None


def test_seeded_init_is_reproducible():
    a, b = nn.Conv2d(3, 4, 3, seed=7), nn.Conv2d(3, 4, 3, seed=7)
    assert np.array_equal(a.weight.data, b.weight.data) and np.array_equal(a.bias.data, b.bias.data)
    bound = 1 / np.sqrt(3 * 9)
    assert np.abs(a.weight.data).max() <= bound


def test_small_training_run_learns():
    """A tiny MLP on two separable blobs: the loss must fall and the accuracy reach 100%."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.5, (64, 2)), rng.normal(1, 0.5, (64, 2))]).astype(np.float32)
    y = np.repeat([0, 1], 64)
    model = nn.Sequential(nn.Linear(2, 16, seed=1), nn.ReLU(), nn.Linear(16, 2, seed=2))
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        losses.append(crit(model(x), y))
        model.backward(crit.backward())
        opt.step()
    assert losses[-1] < 0.2 * losses[0]
    assert (model(x).argmax(1) == y).mean() == 1.0


def test_save_and_load_npz(tmp_path, rng):
    import nnkern
    m = nn.Sequential(nn.Conv2d(1, 2, 3, seed=0), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3, seed=1))
    m(rng.standard_normal((2, 1, 4, 4)).astype(np.float32))  # running stats and num_batches_tracked move
    path = tmp_path / "model.npz"
    nnkern.save(m, path)
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3, seed=5), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3, seed=6))
    fresh.load_state_dict(nnkern.load(path))
    for k, v in m.state_dict().items():
        assert np.array_equal(fresh.state_dict()[k], v), k


@pytest.mark.parametrize("kind", ["gru", "resnet"])
def test_state_dict_round_trips_with_torch(kind, rng):
    if kind == "gru":
        mine, fresh = nn.GRU(3, 4, 2, bidirectional=True, seed=1), nn.GRU(3, 4, 2, bidirectional=True, seed=2)
        theirs = torch.nn.GRU(3, 4, 2, bidirectional=True)
    else:
        from nnkern import models
        mine, fresh = models.ResNet(10, seed=1), models.ResNet(10, seed=2)
        mine(rng.standard_normal((2, 1, 32, 32)).astype(np.float32))  # move the running statistics
        theirs = _torch_resnet()
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in mine.state_dict().items()})
    fresh.load_state_dict(theirs.state_dict())
    for k, v in mine.state_dict().items():
        assert np.array_equal(fresh.state_dict()[k], v), k
    if kind == "resnet":  # and the two compute the same function
        mine.eval(), theirs.eval()
        x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
        assert_close(mine(x), theirs(torch.tensor(x)).detach().numpy(), 1e-5, "resnet eval output")


def _torch_resnet():
    """nnkern.models.ResNet's default layout, written with torch.nn."""
    T = torch.nn

    class Residual(T.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    def block(cin, cout, stride):
        b = T.Sequential(T.Conv2d(cin, cout, 3, stride, 1, bias=False), T.BatchNorm2d(cout), T.ReLU(),
                         T.Conv2d(cout, cout, 3, 1, 1, bias=False), T.BatchNorm2d(cout))
        sc = None if stride == 1 and cin == cout else T.Sequential(T.Conv2d(cin, cout, 1, stride, bias=False),
                                                                   T.BatchNorm2d(cout))
        return T.Sequential(Residual(b, sc), T.ReLU())

    return T.Sequential(T.Conv2d(1, 16, 3, 1, 1, bias=False), T.BatchNorm2d(16), T.ReLU(), block(16, 16, 1),
                        block(16, 32, 2), block(32, 64, 2), T.AdaptiveAvgPool2d(1), T.Flatten(), T.Linear(64, 10))


def _conv_ended_resnet(rng):
    """Blocks that end in a convolution (fusable without batch-norm fusion), both skip kinds."""
    def block(cin, cout, stride):
        body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, seed=rng), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, seed=rng))
        short = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, seed=rng)
        return nn.Sequential(nn.Residual(body, short), nn.ReLU())
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, seed=rng), nn.ReLU(), block(8, 8, 1), block(8, 12, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5, seed=rng))


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("make", [_conv_ended_resnet,
                                  lambda rng: models.ResNet(5, 3, (8, 12), seed=rng),
                                  lambda rng: models.LeNet5(5, 3, seed=rng)],
                         ids=["conv-ended-resnet", "resnet", "lenet"])
def test_fusion_changes_nothing(make, backend, rng):
    """Fused conv/BN + ReLU (+ residual) in the layers give the bits of the unfused chain, forward and backward."""
    import nnkern
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    g = rng.standard_normal((3, 5)).astype(np.float32)
    results = []
    for fused in (True, False):
        model = make(np.random.default_rng(7))
        with nnkern.use_backend(backend), nn.fusion(fused):
            y = model(x)
            gx = model.backward(g)
        results.append((y, gx, [p.grad for p in model.parameters()],
                        [b for _, b in sorted(model.state_dict().items())]))
    (y1, gx1, pg1, sd1), (y2, gx2, pg2, sd2) = results
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(gx1, gx2)
    for a, b in zip(pg1 + sd1, pg2 + sd2):
        np.testing.assert_array_equal(a, b)


def test_fusion_is_used_and_can_be_switched_off(rng, monkeypatch):
    """With fusion on, a Conv2d followed by ReLU makes one conv2d call with activation='relu'."""
    import nnkern
    import nnkern.nn.layers as layers
    calls = []
    real = layers.F.conv2d

    def spy(*args, **kwargs):
        calls.append((kwargs.get("activation"), kwargs.get("residual") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(layers.F, "conv2d", spy)
    model = _conv_ended_resnet(rng)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model(x)
    assert calls.count(("relu", False)) == 3 and calls.count(("relu", True)) == 2 and calls.count((None, False)) == 1
    bn_calls = []
    real_bn = layers.F.batch_norm

    def spy_bn(*args, **kwargs):
        bn_calls.append((kwargs.get("activation"), kwargs.get("residual") is not None))
        return real_bn(*args, **kwargs)

    monkeypatch.setattr(layers.F, "batch_norm", spy_bn)
    models.ResNet(5, 3, (8, 12), seed=1)(x)
    # stem BN+ReLU, first BN+ReLU of each block, last BN + skip + ReLU of each block, the projection's BN alone
    assert sorted(bn_calls, key=str) == sorted([("relu", False)] * 3 + [("relu", True)] * 2 + [(None, False)], key=str)
    assert nnkern.nn.fusion_enabled()
    calls.clear()
    with nn.fusion(False):
        assert not nnkern.nn.fusion_enabled()
        model(x)
    assert all(c == (None, False) for c in calls)
