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


@pytest.fixture(params=["avx512", "avx2"])
def isa(request, monkeypatch):
    """Run the test on each instruction set this CPU has (AVX2 too, which is used only on
    request), with pointwise dispatching to it; then restore the default. A module that runs
    every test this way says ``pytest.mark.usefixtures("isa")``."""
    from pointwise.kernels import native as _native

    try:  # the extension itself, even where POINTWISE_NATIVE keeps pointwise off it
        from pointwise.kernels import _kernel as kernel
    except ImportError:
        pytest.skip("compiled kernels not built")
    before = kernel.isa()
    if not kernel.select(request.param):
        pytest.skip(f"this CPU lacks {request.param}")
    monkeypatch.setattr(_native, "_kernel", kernel)
    # with POINTWISE_NATIVE=0 too: the modules ask ENABLED (and whether torch's OpenMP team,
    # looked up once, can run the kernels) before _kernel
    monkeypatch.setattr(_native, "ENABLED", True)
    monkeypatch.setattr(_native, "ISA", request.param)
    if not _native._host_openmp:
        monkeypatch.setattr(_native, "_host_openmp", None)
        monkeypatch.setattr(_native, "OPENMP_PATH", _native.OPENMP_PATH)  # restored after
    yield request.param
    kernel.select(before or "none")
