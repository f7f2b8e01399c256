"""Fixtures shared by the test files."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

# CI replays the same examples on every run, so a landing never depends on a lucky draw;
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is about as fast, and immune to a busy machine.

    Use it in a module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    torch = sys.modules.get("torch")
    if torch is None:  # the module's importorskip has already skipped it
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["numpy", "kernels"])
def both_paths(request, monkeypatch):
    """Run a test on the NumPy path, then on the compiled float32 kernels where they are
    built and used on this CPU (skipped elsewhere): float32 calls would otherwise only ever
    exercise the kernels here."""
    from pointwise.kernels import native as _native

    if request.param == "numpy":
        monkeypatch.setattr(_native, "_kernel", None)
    elif not _native.ENABLED:
        pytest.skip("compiled kernels not built or not used on this CPU")
    return request.param
