"""Packaging facts: the core imports with NumPy alone and exposes one version string."""

import subprocess
import sys

import pytest

import pointwise as pw


def test_import_does_not_load_torch_or_matplotlib():
    code = (
        "import sys, pointwise; "
        "heavy = [m for m in ('torch', 'matplotlib', 'jax', 'tensorflow', 'scipy') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_single_version_string():
    from importlib.metadata import version

    assert pw.__version__ == version("pointwise-conv")


def test_public_api():
    for name in ("conv1x1", "conv1x1_backward", "cost", "explain", "LAYOUTS", "ACTIVATIONS"):
        assert hasattr(pw, name), name


@pytest.mark.parametrize("value", ["0", "avx2", "avx512", ""])
def test_environment_switch_picks_or_turns_off_the_kernels(value):
    # POINTWISE_NATIVE=0 turns the compiled kernels off; a name asks for an instruction set,
    # granted when they are built and the CPU has it; unset means the widest the CPU has.
    probe = ("from pointwise.kernels import _kernel, native as _native\n"
             "print(_native.ENABLED, _native.ISA, _kernel.select('avx2'), "
             "_kernel.select('avx512'))")
    env = {"PATH": "", "POINTWISE_NATIVE": value}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    if "No module named" in out.stderr:
        pytest.skip("compiled kernels not built")
    enabled, isa, has_avx2, has_avx512 = out.stdout.split()
    expected = {"0": None, "avx2": "avx2" if has_avx2 == "True" else None,
                "avx512": "avx512" if has_avx512 == "True" else None,
                "": "avx512" if has_avx512 == "True" else "avx2" if has_avx2 == "True"
                else None}[value]
    assert (isa, enabled) == (str(expected), str(expected is not None))
