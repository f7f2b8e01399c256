"""What :func:`pointwise.nn.convert` did to a model, module by module."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConvertReport"]


@dataclass
class ConvertReport:
    """What :func:`convert` did, by qualified module name.

    Attributes:
        replaced: the ``nn.Conv2d`` modules now ``Conv1x1``.
        folded: ``(conv, batchnorm)`` pairs; the BN is now ``nn.Identity``.
        fused: ``(conv, activation module, activation)``; the module is now ``nn.Identity``.
        inplace: ``(conv, activation module)`` for an activation after a k×k ``nn.Conv2d``
            (with ``fold_all``): it stays, and now overwrites the conv's output in place.
        shortcuts: ``(block, conv)``: the block's residual addition is now in the conv.
        skipped: ``(module, reason)`` for what was left as it was.
    """

    replaced: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    fused: list[tuple[str, str, str]] = field(default_factory=list)
    inplace: list[tuple[str, str]] = field(default_factory=list)
    shortcuts: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"convert: {len(self.replaced)} replaced, {len(self.folded)} BatchNorm folded, "
            f"{len(self.fused)} activations fused, {len(self.shortcuts)} shortcuts fused, "
            f"{len(self.skipped)} skipped"
        ]
        lines += [f"  replaced  {n}: nn.Conv2d -> Conv1x1" for n in self.replaced]
        lines += [f"  folded    {bn} into {c}" for c, bn in self.folded]
        lines += [f"  fused     {a} into {c} (activation={act!r})" for c, a, act in self.fused]
        lines += [f"  in place  {a} after {c}" for c, a in self.inplace]
        lines += [f"  shortcut  of {b} into {c}" for b, c in self.shortcuts]
        lines += [f"  skipped   {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)
