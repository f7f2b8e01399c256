"""Compress a trained checkpoint's 1×1 convs (:func:`pointwise.nn.compress`), and score it.

``compress_checkpoint`` loads a checkpoint of ``pointwise train``, fits every 1×1 layer on the
training split the checkpoint records, measures accuracy before and after on its held-out
split (the one ``train`` and ``predict`` report), counts MACs and params with
:func:`pointwise.analysis.analyze`, and writes ``OUT/checkpoint.pt``: the config, data and
split of the original, the compressed weights, and a ``"compressed"`` entry whose ``ranks``
let :func:`pointwise.training.export.load_model` rebuild the structure, so ``export`` and
``predict`` take it like any checkpoint. It holds no optimizer state: it cannot be resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pointwise.nn import compress
from pointwise.nn.compress import DEFAULT_ENERGY
from pointwise.nn.report import CompressReport
from pointwise.training import checkpoint as ckpt_io
from pointwise.training.data import load as load_data
from pointwise.training.export import load_model
from pointwise.training.train import CHECKPOINT, evaluate

__all__ = ["CheckpointCompression", "compress_checkpoint"]

#: what the compressed checkpoint keeps of the original (the rest is optimizer state)
KEPT = ("config", "epoch", "split", "data", "history", "world_size")


@dataclass
class CheckpointCompression:
    """Before and after, for one compressed checkpoint. Counts are per image."""

    source: Path
    model: str
    data: str
    report: CompressReport
    macs: tuple[int, int]
    params: tuple[int, int]
    correct: tuple[int, int]
    total: int
    path: Path | None

    @property
    def accuracy(self) -> tuple[float, float]:
        return self.correct[0] / self.total, self.correct[1] / self.total

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for ``json.dumps``; ``before``/``after`` pairs are lists."""
        r = self.report
        return {
            "source": str(self.source), "model": self.model, "data": self.data,
            "images": r.images, "asymmetric": r.asymmetric,
            "path": None if self.path is None else str(self.path),
            "macs_1x1": [r.macs_before, r.macs_after], "macs": list(self.macs),
            "params": list(self.params), "accuracy": list(self.accuracy),
            "correct": list(self.correct), "test_images": self.total,
            "folded": [list(f) for f in r.folded],
            "layers": [{**dataclasses.asdict(la), "break_even": la.break_even}
                       for la in r.layers],
        }

    def __str__(self) -> str:
        def row(name: str, a: float | int, b: float | int, fmt: str, delta: str) -> str:
            return f"  {name:<22}{a:>14{fmt}}{b:>14{fmt}}  {delta}"

        r = self.report
        (a0, a1), (c0, c1) = self.accuracy, self.correct
        lines = [
            f"{self.model} from {self.source}, fitted on {r.images} training images of "
            f"{self.data}",
            str(r),
            "",
            f"  {'':<22}{'before':>14}{'after':>14}",
            row("MACs, 1×1 convs", r.macs_before, r.macs_after, ",", _change(r.macs_before,
                                                                            r.macs_after)),
            row("MACs, whole model", *self.macs, ",", _change(*self.macs)),
            row("params", *self.params, ",", _change(*self.params)),
            row("test accuracy (%)", 100 * a0, 100 * a1, ".2f",
                f"{100 * (a1 - a0):+.2f} points ({c0}/{self.total} -> {c1}/{self.total})"),
        ]
        if self.path is not None:
            lines += ["", f"wrote {self.path}"]
        return "\n".join(lines)


def _change(before: int, after: int) -> str:
    return f"{100 * (after - before) / before:+.1f}%" if before else ""


def compress_checkpoint(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    energy: float | None = None,
    rank: int | None = None,
    layers: Sequence[str] | None = None,
    data: str | None = None,
    asymmetric: bool = False,
) -> CheckpointCompression:
    """Compress ``checkpoint``'s 1×1 convs; write ``out/checkpoint.pt`` when ``out`` is given.

    ``data`` (``"digits"`` or an ``.npz``) defaults to what the model was trained on, with
    the checkpoint's split; ``energy``, ``rank``, ``layers`` and ``asymmetric`` are
    :func:`pointwise.nn.compress`'s.

    Raises:
        ValueError: the checkpoint is already compressed, or anything ``compress`` refuses.
    """
    from pointwise.analysis import analyze

    if energy is None and rank is None:
        energy = DEFAULT_ENERGY  # so the checkpoint records what was used
    source = Path(checkpoint)
    model, state = load_model(source)
    if "compressed" in state:
        raise ValueError(f"expected a checkpoint of `pointwise train`, but {str(source)!r} "
                         f"was written by `pointwise compress`; compress the original "
                         f"({state['compressed'].get('source', 'its source')}) instead")
    config = state["config"]
    spec = data or config["data"]
    dataset = load_data(spec, seed=config["seed"],
                        split=state["split"] if spec == config["data"] else None)
    x_train = torch.from_numpy(dataset.x_train)
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    small, report = compress(model, x_train, energy=energy, rank=rank, layers=layers,
                             asymmetric=asymmetric)
    small.eval()
    correct = tuple(round(evaluate(m, x_test, y_test)[1] * len(y_test)) for m in (model, small))
    shape = (1, *dataset.x_train.shape[1:])
    before, after = analyze(model, shape), analyze(small, shape)
    path = None
    if out is not None:
        path = Path(out) / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: dict[str, Any] = {k: state[k] for k in KEPT if k in state}
        ckpt_io.save(path, {**kept, "model": small.state_dict(), "compressed": {
            "source": str(source), "ranks": report.ranks, "energy": energy, "rank": rank,
            "asymmetric": asymmetric,
            "layers": [la.name for la in report.layers],
            "accuracy": [correct[0] / len(y_test), correct[1] / len(y_test)],
            "macs": [before.macs, after.macs],
        }})
    return CheckpointCompression(source, config["model"], dataset.name, report,
                                 (before.macs, after.macs), (before.params, after.params),
                                 (int(correct[0]), int(correct[1])), len(y_test), path)
