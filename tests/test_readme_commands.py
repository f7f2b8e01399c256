"""Every shell command of the README runs, in order, in one fresh folder, as a newcomer with
the environment activated would type it, and exits 0 printing what the README says.

The slow ones are shortened with options the README itself shows (:data:`SHORTER`): a
smoke run of each benchmark (``--quick``), two-epoch trainings of five batches
(``--epochs``, ``--limit-batches``). ``make`` lines are not run from inside the test suite
(:data:`NOT_RUN` says why and what checks them instead).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the environment the suite runs in, as if activated


def commands() -> list[str]:
    """Every line of every ```bash block, without its comment."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


NOT_RUN = {
    # `make demo` runs `pointwise explain`, whose output test_readme.py compares with the
    # README; `make test` runs this suite, so it cannot run inside it.
    "make demo": "pointwise explain",
    "make test": None,
}

# What a command must print (a fragment of its stdout), where the README says.
PRINTS = {
    "pointwise cost": "9.68× fewer MACs",
    "pointwise analyze googlenet --group-depth": "inception3a",
    "pointwise analyze googlenet --paper": "flagged:",
    "pointwise analyze mobilenet_v1": "Mult-Adds",
    "pointwise train": "done: nin_digits on digits",
    "pointwise export": "same argmax",
    "pointwise predict": "accuracy",
    "pointwise compress": "test accuracy",
    "pointwise explain --pca": "the tutorial's filter",
    "torchrun": "done: nin_digits on digits",
}


def shorter(command: str) -> str:
    """The command with the README's own shortening options: ``--quick`` for benchmarks,
    a tenth of the epochs (default 20) and ``--limit-batches 5`` for training."""
    words = shlex.split(command)
    if "bench" in words or any(w.startswith("benchmarks/bench_") for w in words):
        return command if "--quick" in words else f"{command} --quick"
    if "train" in words:
        if "--epochs" in words:
            i = words.index("--epochs")
            words[i + 1] = str(max(1, int(words[i + 1]) // 10))
        else:
            words += ["--epochs", "2"]
        return shlex.join([*words, "--limit-batches", "5"])
    return command


def extra_names() -> set[str]:
    """The extras of pyproject.toml (tomllib is 3.11+; the project supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^(\w+) = \[", section, re.M))


def test_the_readme_has_commands_and_make_lines_are_known():
    found = commands()
    assert len(found) >= 12
    extras = extra_names()
    for command in found:
        if command.startswith("make install"):
            (names,) = re.findall(r"EXTRAS=(\S+)", command) or [""]
            assert names and set(names.split(",")) <= set(extras), command
        elif command.startswith("make"):
            assert command in NOT_RUN, f"{command!r}: run it here, or say why not"
    # the extras the README names in its text exist too
    for names in re.findall(r"EXTRAS=([\w,]+)", README.read_text(encoding="utf-8")):
        assert set(names.split(",")) <= set(extras), names


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder, where `benchmarks/` is the repository's, as in a clone."""
    path = tmp_path_factory.mktemp("newcomer")
    (path / "benchmarks").symlink_to(ROOT / "benchmarks")
    return path


@pytest.mark.parametrize("index", range(len(commands())))
def test_readme_command(index: int, folder: Path):
    command = commands()[index]
    if command.startswith("make install"):
        return  # its extras are checked above; the suite runs with every extra installed
    if command in NOT_RUN:
        if NOT_RUN[command] is None:
            return
        command = NOT_RUN[command]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(["bash", "-c", shorter(command)], cwd=folder, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, f"{shorter(command)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr, "piped output holds no carriage returns"
    for prefix, fragment in PRINTS.items():
        if command.startswith(prefix):
            assert fragment in proc.stdout, f"{command}: {fragment!r} not in\n{proc.stdout}"
