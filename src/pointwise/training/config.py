"""The settings of a training run: what decides its result, stored in every checkpoint.

Kept apart from :mod:`pointwise.training.train` because it needs no torch: the command line builds
its parser (and its help's defaults) from here without loading torch for every command.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LR", "TrainConfig"]

DEFAULT_LR = {"adamw": 3e-3, "sgd": 0.1}


@dataclass
class TrainConfig:
    """Everything that decides the result of a run; stored in the checkpoint as primitives.

    ``lr=None`` picks the optimizer's default (``DEFAULT_LR``). ``batch_size`` is the global
    batch: with W DDP ranks each takes ``batch_size / W``. ``limit_batches`` cuts each epoch
    short (for smoke tests and the fault-injection test).
    """

    model: str = "nin_digits"
    data: str = "digits"
    epochs: int = 20
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    seed: int = 0
    limit_batches: int | None = None

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def validate(self) -> None:
        if self.optimizer not in DEFAULT_LR:
            raise ValueError(f"expected --optimizer one of {sorted(DEFAULT_LR)}, but got "
                             f"{self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected --{name.replace('_', '-')} ≥ 1, but got "
                                 f"{getattr(self, name)}")
        if self.limit_batches is not None and self.limit_batches < 1:
            raise ValueError(f"expected --limit-batches ≥ 1, but got {self.limit_batches}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"expected --lr > 0, but got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        """The config stored by :meth:`to_dict`; every field's type is checked, because the
        dict comes from a file (``ValueError`` naming the field otherwise)."""
        if not isinstance(d, dict):
            raise ValueError(f"expected the checkpoint's config as a dict, but got "
                             f"{type(d).__name__}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            kinds = _KINDS[f.name]
            ok = any(v is None if k is None else
                     isinstance(v, k) and not (isinstance(v, bool) and k is not bool)
                     for k in kinds)
            if not ok:
                want = " or ".join("None" if k is None else k.__name__ for k in kinds)
                raise ValueError(f"expected the config's {f.name!r} as {want}, but got "
                                 f"{type(v).__name__} {_short(v)}")
            values[f.name] = v
        return cls(**values)


# The type each stored field may have (a float field takes an int too, as JSON would).
_KINDS: dict[str, tuple[Any, ...]] = {
    "model": (str,), "data": (str,), "epochs": (int,), "batch_size": (int,),
    "lr": (float, int, None), "optimizer": (str,), "weight_decay": (float, int),
    "seed": (int,), "limit_batches": (int, None),
}


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
