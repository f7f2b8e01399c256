"""How the program fails: one ``error:`` line on stderr (and maybe one ``hint:`` line), a
documented exit status, never a traceback.

Every command runs inside :func:`run_command`, which turns what can go wrong into an exit
status (ruff, uv and pip print the same two lines):

====  ==================================================================================
code  meaning
====  ==================================================================================
0     done
1     the command ran, but a check it makes failed (bench's verification, export's
      onnxruntime comparison)
2     usage: a bad command line, or an input that is missing, of the wrong kind, or
      malformed (a file, a shape, a value)
3     this machine lacks what the command needs: an extra (``pip install …``), a device,
      or the memory for what was asked
4     a bug in pointwise: an unexpected exception (``POINTWISE_TRACEBACK=1`` shows it)
130   interrupted (Ctrl-C), as shells report SIGINT; ``train`` names its last checkpoint
141   the reader of stdout went away (``pointwise explain | head``), as for SIGPIPE
====  ==================================================================================

Commands raise :class:`CliError` for a message of their own; the library's ``ValueError``,
``TypeError`` and ``OSError`` are usage errors as they stand, since they already say what
was expected and what came.

>>> CliError("expected a file", hint="pass --input FILE").lines()
['error: expected a file', 'hint: pass --input FILE']
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["EXIT", "CliError", "Parser", "Renamed", "extra_hint", "run_command"]

EXIT = {"ok": 0, "failed": 1, "usage": 2, "missing": 3, "bug": 4, "interrupted": 130,
        "pipe": 141}

# What to install for a module a command imports, by the module's top-level name: the
# extra of pyproject.toml that brings it.
EXTRAS = {"torch": "torch", "sklearn": "train", "tqdm": "train", "onnx": "onnx",
          "onnxruntime": "onnx", "matplotlib": "plot", "jax": "jax", "ml_dtypes": "half"}


class CliError(Exception):
    """An error the program reports as ``error: message`` (and ``hint: hint``)."""

    def __init__(self, message: str, *, hint: str | None = None, code: int = EXIT["usage"]):
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code

    def lines(self) -> list[str]:
        out = [f"error: {one_line(self.message)}"]
        return out + ([f"hint: {one_line(self.hint)}"] if self.hint else [])


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def extra_hint(module: str, extra: str | None = None) -> str:
    """How to install what brings ``module``: the extra it belongs to (or ``extra``)."""
    extra = extra or EXTRAS.get(module.split(".")[0], "test")
    return (f"install the {extra!r} extra: pip install -e '.[{extra}]' in a clone "
            f"(make install EXTRAS={extra}), or pip install 'pointwise-conv[{extra}]'")


class Parser(argparse.ArgumentParser):
    """argparse with the program's conventions: no abbreviated options, and a usage error
    as ``error:`` plus a ``hint:`` naming the command's ``--help`` (not the whole usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        hint = f"see `{self.prog} --help`"
        if message.startswith("unrecognized arguments:"):
            words = [w.split("=")[0] for w in message.split(":", 1)[1].split()]
            near = [m for w in words if w.startswith("--")
                    for m in difflib.get_close_matches(w, self._all_options(), n=1)]
            hint = f"did you mean {near[0]}?" if near else hint
        raise CliError(message, hint=hint)

    def _all_options(self) -> list[str]:
        """Every option string of this parser and of its subcommands."""
        out: list[str] = []
        for action in self._actions:
            out += [o for o in action.option_strings if o.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if isinstance(sub, Parser):
                        out += sub._all_options()
        return out


class Renamed(argparse.Action):
    """An option that was renamed or dropped: its use is a usage error with the new way.

    ``p.add_argument("--format", action=Renamed, hint="--json PATH or --csv PATH")``
    """

    def __init__(self, option_strings: Sequence[str], dest: str, hint: str = "",
                 **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.hint = hint

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        raise CliError(f"{option_string} is not an option of `{parser.prog}`",
                       hint=self.hint)


def run_command(run: Callable[[], int], extra: str | None = None) -> int:
    """``run()``, with every failure reported as :class:`CliError` says; returns the status.

    ``extra``: the extra the command needs, named in the hint when an import fails.
    """
    try:
        return int(run())
    except CliError as e:
        return _report(e)
    except KeyboardInterrupt:
        return _report(CliError("interrupted", code=EXIT["interrupted"]))
    except BrokenPipeError:  # `pointwise explain | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT["pipe"]
    except ModuleNotFoundError as e:
        name = e.name or ""
        if name.split(".")[0] in EXTRAS:
            said = str(e) if str(e).startswith("expected") else (
                f"this command needs {name.split('.')[0]}, which is not installed")
            return _report(CliError(said, hint=extra_hint(name, extra), code=EXIT["missing"]))
        return _report(CliError(str(e) or type(e).__name__))
    except RecursionError:  # before ValueError's handler: it is a RuntimeError
        return _report(CliError("expected an input nested less deeply, but it exceeded "
                                "Python's recursion limit"))
    except MemoryError:
        return _report(CliError("out of memory for what was asked", code=EXIT["missing"],
                                hint="ask for a smaller size"))
    except (ValueError, TypeError, OSError, ImportError) as e:  # json errors are ValueErrors
        return _report(CliError(str(e) or type(e).__name__))
    except Exception as e:  # a bug: still one line, and the way to see more
        if os.environ.get("POINTWISE_TRACEBACK"):
            traceback.print_exc()
        return _report(CliError(f"unexpected {type(e).__name__}: {e}", code=EXIT["bug"],
                                hint="this is a bug in pointwise; POINTWISE_TRACEBACK=1 "
                                     "shows where"))


def _report(e: CliError) -> int:
    with contextlib.suppress(OSError):  # stderr closed too: the status still tells
        print("\n".join(e.lines()), file=sys.stderr, flush=True)
    return e.code
