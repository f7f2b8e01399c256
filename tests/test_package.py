"""Packaging facts: the core imports with NumPy alone and exposes one version string."""

import subprocess
import sys

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
