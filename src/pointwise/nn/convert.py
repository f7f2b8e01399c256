"""``convert(model)``: every 1×1 ``nn.Conv2d`` becomes a ``Conv1x1``, with BN and activation folded.

What it does, in order:

1. **Replace.** Every module of type exactly ``nn.Conv2d`` with a 1×1 kernel (any stride,
   padding or groups; dilation is irrelevant at 1×1) becomes a :class:`Conv1x1` with the same
   parameters. Always safe: ``Conv1x1`` computes what the conv computed. Skipped and reported:
   ``padding_mode`` other than ``"zeros"``, and subclasses of ``nn.Conv2d`` (their forward
   may differ).
   With ``kxk`` (on by default), every k×k ``nn.Conv2d`` with one group likewise becomes a
   :class:`pointwise.nn.Conv2d` (:mod:`pointwise.nn.convert_kxk`), which the next steps
   treat as a ``Conv1x1``.
2. **Fold** (``fold_batchnorm``, eval mode only) a ``BatchNorm2d`` that directly follows a
   ``Conv1x1`` into its weight and bias, and **fuse** (``fuse_activation``) a directly
   following ``ReLU``, ``ReLU6``, ``SiLU`` or ``Hardswish`` module into its ``activation``.
   The folded BN and fused activation become ``nn.Identity``.
3. **Fold around the other convs** (``fold_all``, on by default): a BN that directly follows
   any other stock ``nn.Conv2d`` (3×3, depthwise, ...) is folded into it the same way, and an
   activation module that directly follows such a conv (or its folded BN) is set to run in
   place, since nothing else reads the conv's output. These convs stay ``nn.Conv2d``.
4. **Fuse shortcuts** (with both ``fold_batchnorm`` and ``fuse_activation``): a block that
   knows its own residual, such as the zoo's ResNet ``Bottleneck`` and MobileNetV2
   ``InvertedResidual``, defines ``fuse_shortcut()``; it is called once the BN before the
   addition is folded, and the block's last ``Conv1x1`` then adds the shortcut and applies
   the block's activation in its epilogue (``Conv1x1.forward(x, residual=...)``). The
   hook's name and contract: ``fuse_shortcut() -> str | None``, the name (within the block)
   of the conv that took the addition, or None when the block left itself unchanged. A
   block whose convs then apply its shared activation module (called twice or more, so
   never fused by step 2) sets ``activations_fused``: ResNet's blocks do.
5. **Fuse blocks** (``blocks``, with ``fold_batchnorm`` and ``fuse_activation``): a block that
   defines ``fused_block() -> nn.Module | None``, such as the zoo's MobileNet
   ``DepthwiseSeparable`` and ``InvertedResidual``, is replaced by the module it returns
   (:class:`pointwise.nn.FusedDepthwiseSeparable`, :class:`pointwise.nn.FusedInvertedResidual`:
   the whole block in one pass on the fused kernel), or left as it is on None.
6. **Head** (``head``): every ``nn.Linear`` and global ``nn.AdaptiveAvgPool2d`` becomes a
   :class:`pointwise.nn.Linear` or :class:`pointwise.nn.GlobalAvgPool2d`: torch's modules,
   whose inference runs on the head's kernels (:mod:`pointwise.nn.convert_head`).

Steps 2 and 3 fold or fuse a pair only where ``torch.fx``'s data flow proves it direct; how,
and what that cannot see, is in :mod:`pointwise.nn._chains`.

A module with hooks (forward, forward-pre, backward or backward-pre: ``register_forward_hook``
and its kin) is left as it is, and reported as skipped: a conv is not replaced and nothing is
folded into it, a BatchNorm or activation is not folded or fused, and a block with a hooked
module inside neither fuses its shortcut nor becomes a fused block. Converting them would
drop the hooks, or change what they see.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn

from pointwise.nn import frozen
from pointwise.nn._chains import FUSABLE, find_chains, hooks, qualified
from pointwise.nn.blocks import FusedDepthwiseSeparable, FusedInvertedResidual
from pointwise.nn.conv2d import Conv2d
from pointwise.nn.convert_head import replace_head
from pointwise.nn.convert_kxk import replace_kxk
from pointwise.nn.head import GlobalAvgPool2d, Linear
from pointwise.nn.module import Conv1x1
from pointwise.nn.pool import MaxPool2d
from pointwise.nn.report import ConvertReport

__all__ = ["ConvertReport", "convert", "to_conv2d"]


def convert(
    model: nn.Module,
    *,
    fold_batchnorm: bool = True,
    fuse_activation: bool = True,
    fold_all: bool = True,
    kxk: bool = True,
    blocks: bool = True,
    head: bool = True,
    inplace: bool = False,
    freeze: bool = False,
) -> tuple[nn.Module, ConvertReport]:
    """Replace every 1×1 ``nn.Conv2d`` of ``model`` by ``Conv1x1``; fold BN and fuse activations.

    Args:
        model: any ``nn.Module``. With ``fold_batchnorm`` it must be in eval mode.
        fold_batchnorm: fold a ``BatchNorm2d`` that directly follows a 1×1 conv into it.
        fuse_activation: fuse a ``ReLU``/``ReLU6``/``SiLU``/``Hardswish`` module that
            directly follows a 1×1 conv (after folding, the BN) into it.
        fold_all: treat every other stock ``nn.Conv2d`` (3×3, depthwise, ...) the same way
            where that is possible without a new module: fold the BN that directly follows
            it into its weight and bias, and make the activation module that directly follows
            run in place. Eager torch then skips one pass over the output and one allocation
            per such layer.
        kxk: replace every k×k ``nn.Conv2d`` with one group by :class:`pointwise.nn.Conv2d`,
            whose inference runs on the taps kernels (:mod:`pointwise.nn.convert_kxk`); its
            BN and activation are then folded and fused as a ``Conv1x1``'s are.
        blocks: swap each block that offers a fused module (``fused_block()``: the zoo's
            MobileNet blocks) for it, once its BNs are folded and activations fused.
        head: swap every ``nn.Linear`` and ``nn.AdaptiveAvgPool2d((1, 1))`` for
            :class:`pointwise.nn.Linear` and :class:`pointwise.nn.GlobalAvgPool2d`.
        inplace: modify ``model`` itself instead of a deep copy.
        freeze: the converted convs and fused blocks read their weights packed once, as an
            inference engine does, instead of on every call (:func:`pointwise.nn.freeze`:
            faster at small batches; one more copy of the weights; an edit that torch's
            version counter does not see, through ``.data`` or a NumPy view, needs
            :func:`pointwise.nn.refresh`).

    Returns:
        ``(converted model, ConvertReport)``. The converted model gives the same eval outputs
        within float32 rounding. See the module docstring for when a pair is "direct".

    Raises:
        ValueError: ``fold_batchnorm=True`` on a model in training mode.

    Examples:
        >>> from torch import nn
        >>> from pointwise.nn import convert
        >>> m = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU()).eval()
        >>> m2, report = convert(m)
        >>> m2
        Sequential(
          (0): Conv1x1(8, 16, activation='relu')
          (1): Identity()
          (2): Identity()
        )
        >>> print(report)
        convert: 1 replaced, 1 BatchNorm folded, 1 activations fused, 0 shortcuts fused, 0 skipped
          replaced  0: nn.Conv2d -> Conv1x1
          folded    1 into 0
          fused     2 into 0 (activation='relu')
    """
    if fold_batchnorm:
        _require_eval(model, "the model")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConvertReport()
    _report_hooks(model, report)
    model = _replace_convs(model, report)
    if kxk:
        model = replace_kxk(model, report)
    if fold_batchnorm or fuse_activation:
        places = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
        chains: list[tuple[str, str | None, str | None]] = []
        find_chains(model, "", places, fold_batchnorm, fuse_activation, chains, report,
                     fold_all)
        for conv_name, bn_name, act_name in chains:
            _apply(model, conv_name, bn_name, act_name, report)
    if fold_batchnorm and fuse_activation:
        _fuse_shortcuts(model, report)
        if blocks:
            model = _fuse_blocks(model, report)
    if head:
        model = replace_head(model, report)
    if freeze:
        frozen.freeze(model)
    return model, report


def to_conv2d(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` with every ``Conv1x1`` replaced by ``nn.Conv2d(kernel_size=1)``: torch alone.

    A fused block (:class:`pointwise.nn.FusedInvertedResidual` and its sibling) becomes its
    convs as ``nn.Conv2d`` modules with their activations, the input added where it was.
    The head's :class:`pointwise.nn.Linear` and :class:`pointwise.nn.GlobalAvgPool2d`
    become torch's ``nn.Linear`` (with the same parameters) and ``nn.AdaptiveAvgPool2d``.

    The reference a converted model is measured against (``pointwise bench --suite models``
    times the zoo's models this way as "torch eager"). A ``Conv1x1`` with an activation
    becomes ``nn.Sequential(conv, activation)``. A model whose blocks ``convert()`` fused a
    shortcut into is refused: their forward passes the shortcut to the conv.

    Raises:
        ValueError: a block of ``model`` has a fused shortcut.
    """
    fused = [n for n, m in model.named_modules() if getattr(m, "shortcut_fused", False)]
    if fused:
        raise ValueError(
            f"expected a model without fused shortcuts, but got {len(fused)} blocks whose "
            f"Conv1x1 adds the shortcut (first: {fused[0]!r}); call to_conv2d on the model "
            f"before convert()"
        )
    if not inplace:
        model = copy.deepcopy(model)
    kinds = (Conv1x1, Conv2d, FusedDepthwiseSeparable, FusedInvertedResidual, Linear,
             GlobalAvgPool2d, MaxPool2d)
    if isinstance(model, kinds):
        return model.to_conv2d()
    new: dict[int, nn.Module] = {}  # a conv held at two places stays one shared module
    done: list[str] = []  # swapped blocks, whose convs went with them
    for qualname, child in list(model.named_modules(remove_duplicate=False))[1:]:
        if isinstance(child, kinds) and not any(qualname.startswith(d) for d in done):
            if id(child) not in new:
                new[id(child)] = child.to_conv2d()
            _set(model, qualname, new[id(child)])
            done.append(qualname + ".")
    return model


def _report_hooks(model: nn.Module, report: ConvertReport) -> None:
    """Name every module convert() would touch that its hooks keep as it is."""
    kinds: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d, *FUSABLE)
    for name, m in model.named_modules():
        why = hooks(m) if isinstance(m, kinds) else None
        if why is not None:
            report.skipped.append((name or "(model)", why))


def _fuse_shortcuts(model: nn.Module, report: ConvertReport) -> None:
    """Step 4 of the module docstring: call every block's ``fuse_shortcut()`` hook."""
    for name, block in model.named_modules():
        hook = getattr(block, "fuse_shortcut", None)
        if callable(hook) and any(hooks(m) for m in list(block.modules())[1:]):
            report.skipped.append((name or "(model)", "a module inside has hooks; its "
                                   "shortcut is not fused"))
        elif callable(hook):
            conv = hook()
            if conv is not None:
                report.shortcuts.append((name or "(model)", qualified(name, conv)))
            if getattr(block, "activations_fused", False):  # its shared activation is unused:
                under = qualified(name, "")  # no longer "skipped", but fused into its convs
                report.skipped = [(n, why) for n, why in report.skipped
                                  if not (n.startswith(under) and "times in forward" in why)]


def _fuse_blocks(model: nn.Module, report: ConvertReport) -> nn.Module:
    """Step 5 of the module docstring: swap every block whose ``fused_block()`` hook gives a
    module for it."""
    for name, block in list(model.named_modules()):
        hook = getattr(block, "fused_block", None)
        if callable(hook) and any(hooks(m) for m in list(block.modules())[1:]):
            report.skipped.append((name or "(model)", "a module inside has hooks; the block "
                                   "is not fused"))
            continue
        new = hook() if callable(hook) else None
        if new is None:
            continue
        report.blocks.append(name or "(model)")
        if not name:
            return new
        _set(model, name, new)
    return model


def _require_eval(module: nn.Module, what: str) -> None:
    if module.training:
        raise ValueError(
            f"expected {what} in eval mode to fold BatchNorm (in training mode BatchNorm "
            f"normalises with batch statistics, which no fixed weight can reproduce), but got "
            f"training=True; call model.eval() first, or pass fold_batchnorm=False"
        )


# ---------------------------------------------------------------------------------- replace
def _convertible(conv: nn.Module) -> str | None:
    """Why this 1×1 conv is left alone, or None when it is replaced."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} subclasses nn.Conv2d; its forward may differ"
    if hooks(conv) is not None:
        return "has hooks"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}: Conv1x1 pads with zeros only"
    return None


def _is_1x1_conv(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and not isinstance(m.weight, nn.parameter.UninitializedParameter)
        and tuple(m.kernel_size) == (1, 1)
    )


def _replace_convs(model: nn.Module, report: ConvertReport) -> nn.Module:
    if _is_1x1_conv(model):  # the model is itself one conv
        why = _convertible(model)
        if why is not None:
            if why != "has hooks":  # reported with its kinds already
                report.skipped.append(("(model)", why))
            return model
        report.replaced.append("(model)")
        return Conv1x1.from_conv2d(model)  # type: ignore[arg-type]
    new: dict[int, nn.Module] = {}  # a conv held at two places stays one shared module
    for qualname, child in list(model.named_modules(remove_duplicate=False))[1:]:
        if not _is_1x1_conv(child):
            continue
        why = _convertible(child)
        if why is not None:
            if why != "has hooks":  # reported with its kinds already
                report.skipped.append((qualname, why))
            continue
        if id(child) not in new:
            new[id(child)] = Conv1x1.from_conv2d(child)
        _set(model, qualname, new[id(child)])
        report.replaced.append(qualname)
    return model


# ------------------------------------------------------------------------------------ apply
def _set(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, name = qualname.rpartition(".")
    setattr(model.get_submodule(parent_name), name, new)


def _apply(model, conv_name: str, bn_name: str | None, act_name: str | None, report) -> None:
    conv = model.get_submodule(conv_name)
    if bn_name is not None:
        bn = model.get_submodule(bn_name)
        why = _unfoldable(conv, bn)
        if why is not None:
            report.skipped.append((bn_name, why))
            return  # the activation follows the BN, so it stays too
        _require_eval(bn, f"BatchNorm {bn_name!r}")
        _fold(conv, bn)
        _set(model, bn_name, nn.Identity())
        report.folded.append((conv_name, bn_name))
    if act_name is not None:
        act = model.get_submodule(act_name)
        if isinstance(conv, (Conv1x1, Conv2d)):
            conv.activation = FUSABLE[type(act)]
            _set(model, act_name, nn.Identity())
            report.fused.append((conv_name, act_name, conv.activation))
        else:  # nn.Conv2d has no activation: the module stays, writing over the conv output,
            act.inplace = True  # which the data flow shows nothing else reads
            report.inplace.append((conv_name, act_name))


def _unfoldable(conv: Conv1x1 | nn.Conv2d, bn: nn.BatchNorm2d) -> str | None:
    if bn.num_features != conv.out_channels:
        return f"has {bn.num_features} features for {conv.out_channels} channels"
    if bn.running_mean is None or bn.running_var is None:
        return "track_running_stats=False: it always uses batch statistics"
    return None


@torch.no_grad()
def _fold(conv: Conv1x1 | nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``bn(conv(x))`` as one conv: w' = w·γ/σ, b' = (b − μ)·γ/σ + β, σ = √(var + eps)."""
    dt = torch.float64
    assert bn.running_mean is not None and bn.running_var is not None  # see _unfoldable
    scale = torch.rsqrt(bn.running_var.to(dt) + bn.eps)  # (F,)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dt)
    shift = -bn.running_mean.to(dt) * scale  # (F,)
    if bn.bias is not None:
        shift = shift + bn.bias.to(dt)
    w = conv.weight
    b = None if conv.bias is None else conv.bias.to(dt)
    w.copy_(w.to(dt) * scale[:, None, None, None])  # (F, C/G, kh, kw) · (F, 1, 1, 1)
    new_bias = shift if b is None else b * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(w.dtype))
    else:
        conv.bias.copy_(new_bias)
