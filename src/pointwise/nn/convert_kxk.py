""":func:`pointwise.nn.convert`'s k×k pass: every k×k ``nn.Conv2d`` with one group becomes a
:class:`pointwise.nn.Conv2d`, whose inference runs on the taps kernels, and so does every
depthwise 3×3 conv (padding 1, stride 1 or 2: MobileNet's), which runs on the depthwise
kernel. Against torch's channels_last depthwise conv (interleaved, N=8, 2 threads, + ReLU6)
that kernel ran MobileNetV2's ten depthwise shapes at 0.94-1.65× (about 1.0× where both
stream from memory: 112×112×96/2, 56×56×144/2).

The swap keeps the parameters, their state_dict keys and the conv's options, and is always
safe: ``Conv2d`` is ``nn.Conv2d`` with a fused epilogue that starts empty. The later passes
then treat it as they treat a ``Conv1x1``: a BatchNorm that directly follows is folded into
it and an activation module that directly follows is fused into its epilogue, and a block
whose last conv it is may hand it the shortcut (``fuse_shortcut()``: ResNet's BasicBlock).

Every ``nn.MaxPool2d`` becomes a :class:`pointwise.nn.pool.MaxPool2d` (the same module, its
inference on channels-last tensors on pointwise's max-pooling kernel): the pool after
ResNet-50's stem took 106 µs on it against torch's 246 (N=1, 2 threads).

Left as they are: other convs with groups, whose kernels are not these;
1×1 convs (the 1×1 pass's); subclasses of ``nn.Conv2d``, whose forward may differ;
``padding_mode`` other than ``"zeros"`` (reported); and convs with hooks (reported by
``convert()``), which the swap would drop.
"""

from __future__ import annotations

from torch import nn

from pointwise.nn._chains import hooks
from pointwise.nn._native_taps import is_depthwise3x3
from pointwise.nn.conv2d import Conv2d
from pointwise.nn.pool import MaxPool2d
from pointwise.nn.report import ConvertReport

__all__ = ["replace_kxk"]


def _candidate(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and tuple(m.kernel_size) != (1, 1)
            and (m.groups == 1 or is_depthwise3x3(m))
            and not isinstance(m.weight, nn.parameter.UninitializedParameter)
            and hooks(m) is None)


def _pool(m: nn.Module) -> bool:
    return type(m) is nn.MaxPool2d and hooks(m) is None


def replace_kxk(model: nn.Module, report: ConvertReport) -> nn.Module:
    """Swap the k×k convs and max pools of ``model`` (in place; the model itself if it is
    one)."""
    if _pool(model):
        report.pools.append("(model)")
        return MaxPool2d.from_maxpool(model)  # type: ignore[arg-type]
    if _candidate(model):
        if model.padding_mode != "zeros":
            report.skipped.append(("(model)", _why(model)))
            return model
        report.kxk.append("(model)")
        return Conv2d.from_conv2d(model)  # type: ignore[arg-type]
    new: dict[int, nn.Module] = {}  # a conv held at two places stays one shared module
    for qualname, child in list(model.named_modules(remove_duplicate=False))[1:]:
        parent, _, name = qualname.rpartition(".")
        if _pool(child):
            new.setdefault(id(child), MaxPool2d.from_maxpool(child))
            setattr(model.get_submodule(parent), name, new[id(child)])
            report.pools.append(qualname)
            continue
        if not _candidate(child):
            continue
        if child.padding_mode != "zeros":
            report.skipped.append((qualname, _why(child)))
            continue
        if id(child) not in new:
            new[id(child)] = Conv2d.from_conv2d(child)
        setattr(model.get_submodule(parent), name, new[id(child)])
        report.kxk.append(qualname)
    return model


def _why(conv: nn.Module) -> str:
    return f"padding_mode={conv.padding_mode!r}: the taps kernels pad with zeros only"
