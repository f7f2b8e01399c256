"""The README's Python snippets run, and print what their comments say they print."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def expected_output(code: str) -> list[str]:
    """Comment lines that follow a print(...) statement are its expected output."""
    out, after_print = [], False
    for line in code.splitlines():
        if line.startswith("# ") and after_print:
            out.append(line[2:])
        elif line.startswith("#") and line.strip() == "#" and after_print:
            out.append("")
        else:
            after_print = "print(" in line
    return out


def test_readme_has_snippets():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_snippet(index):
    code = python_blocks()[index]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, f"README.md snippet {index}", "exec"), {})
    expected = expected_output(code)
    assert expected, "each snippet shows its output in comments"
    assert buf.getvalue().splitlines() == expected


def test_readme_shows_the_two_commands_first():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")


def test_readme_demo_output_is_what_explain_prints():
    from pointwise.cli import main

    text = README.read_text(encoding="utf-8")
    block = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["explain"]) == 0
    printed = buf.getvalue().splitlines()
    shown = [line for line in block.splitlines() if line.strip() and line != "…"]
    assert all(line in printed for line in shown), set(shown) - set(printed)
