import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
# fresh native outputs start as NaN, so an element a kernel forgets to write cannot pass unnoticed
os.environ.setdefault("NNKERN_POISON_OUTPUTS", "1")

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True)
    settings.register_profile("long", max_examples=2000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the 'test' extra
    pass


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh data per test, reproducible per run."""
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def isa(request):
    """The kernel family ``request.param`` selected for one test (parametrize with ``indirect=True``)."""
    import nnkern._cpu as _cpu
    before = _cpu.isa()
    _cpu.select_isa(request.param)
    yield request.param
    _cpu.select_isa(before)
