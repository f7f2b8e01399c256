"""Shapes and counts of every layer, traced on torch's meta device.

:func:`trace` deep-copies a model without its data onto the meta device (tensors with shapes
and no storage), runs its forward once in eval mode with a hook on every module, and turns
each call of a leaf module into a :class:`Layer` whose :class:`~pointwise.cost.Cost` comes
from a formula in :mod:`pointwise.cost`. No arithmetic runs, and the model passed in is not
touched. A :class:`torch.overrides.TorchFunctionMode` follows tensors through functional ops
(``F.relu``, ``x + 1``), so each layer knows which layer computed its input (``source``).

:func:`pointwise.analysis.analyze` is the public entry point; it wraps the layers in a
:class:`~pointwise.analysis.Report`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pointwise.cost import (
    Cost,
    conv_cost,
    conv_cost_for_output,
    linear_cost,
    norm_cost,
    param_cost,
)
from pointwise.nn import Conv1x1

__all__ = ["KIND_1X1", "PASS_THROUGH", "Layer", "Shape", "as_list", "batch_size", "check_shape",
           "name_prefix", "spatial", "trace"]

Shape = tuple[int, ...]
KIND_1X1 = "conv 1×1"
# Kinds that pass their input through element by element: a reduction that feeds a k×k conv
# through a norm and an activation still feeds it.
PASS_THROUGH = frozenset({"norm", "act", "dropout", "identity"})
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_POOLS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
          nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
          nn.modules.pooling._LPPoolNd)


@dataclass(frozen=True)
class Layer:
    """One call of one leaf module (a module run twice gives two rows; ``call`` counts them).

    ``in_shape``/``out_shape`` are None for a module the forward never ran (an auxiliary
    classifier in eval mode): its params count, its MACs are 0. ``source`` is the index of
    the layer whose output this layer read, when the trace could tell.
    """

    index: int
    name: str
    kind: str
    type: str
    cost: Cost
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    groups: int | None = None
    channels: tuple[int, int] | None = None  # (in, out) of a conv or linear layer
    in_shape: Shape | None = None
    out_shape: Shape | None = None
    source: int | None = None
    call: int = 1

    @property
    def params(self) -> int:
        return self.cost.params

    @property
    def weights(self) -> int:
        return self.cost.weights

    @property
    def macs(self) -> int:
        return self.cost.macs

    @property
    def traced(self) -> bool:
        return self.in_shape is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "type": self.type,
                "kernel": as_list(self.kernel), "stride": as_list(self.stride),
                "groups": self.groups,
                "channels": as_list(self.channels), "input": as_list(self.in_shape),
                "output": as_list(self.out_shape), "call": self.call,
                "weights": self.cost.weights, "biases": self.cost.biases,
                "params": self.params, "macs": self.macs}



Modules = dict[str, tuple[Shape, Shape]]  # qualified name -> (input, output) shapes


def trace(model: nn.Module, shape: Shape, label: str) -> tuple[list[Layer], Modules]:
    """The layers of ``model`` run on a meta input of ``shape``, and every module's shapes.

    Modules the forward never calls still get a row for their params (MACs 0).
    """
    meta = _meta_copy(model)
    tracer = _Tracer(meta)
    dtype = next((p.dtype for p in meta.parameters() if p.is_floating_point()), torch.float32)
    x = torch.empty(shape, device="meta", dtype=dtype)
    try:
        with torch.no_grad(), _Flow(tracer.producer, tracer.keep):
            meta(x)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, IndexError) as e:
        why = " ".join(str(e).split())
        where = ""
        if tracer.active:  # the innermost module that had started and not finished
            qual, m, x_shape = tracer.active[-1]
            where = f" in {qual or 'the model'!r} ({_describe_module(m)}, given {x_shape})"
        raise ValueError(f"expected {label} to run on an input of shape {list(shape)}, but "
                         f"its forward failed on the meta device{where}: {why}") from None
    finally:
        tracer.remove()
    tracer.add_unrun()
    return tracer.layers, tracer.modules


def _describe_module(m: nn.Module) -> str:
    """``Conv2d(3, 16, kernel_size=(3, 3))``: the module's repr on one line, shortened."""
    text = " ".join(repr(m).split())
    return text if len(text) <= 120 else text[:117] + "..."


class _Tracer:
    """Forward hooks that turn each leaf-module call into a :class:`Layer`."""

    def __init__(self, model: nn.Module) -> None:
        self.named = list(model.named_modules())
        self.layers: list[Layer] = []
        self.modules: dict[str, tuple[Shape, Shape]] = {}
        self.producer: dict[int, int] = {}  # id(tensor) -> index of the layer that made it
        self.keep: list[torch.Tensor] = []  # holds every tensor in producer, so ids stay unique
        self.seen: set[int] = set()  # ids of parameters already counted
        self.calls: dict[int, int] = {}
        self.pending: dict[int, list[int | None]] = {}
        self.active: list[tuple[str, nn.Module, list[int] | None]] = []  # modules running
        self.handles = []
        for qual, m in self.named:
            self.handles.append(m.register_forward_pre_hook(self._make_pre(qual)))
            self.handles.append(m.register_forward_hook(self._make_post(qual)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _make_pre(self, qual: str) -> Any:
        def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
            x = _first_tensor(args)
            self.pending.setdefault(id(m), []).append(
                None if x is None else self.producer.get(id(x)))
            self.active.append((qual, m, None if x is None else list(x.shape)))
        return pre

    def _make_post(self, qual: str) -> Any:
        def post(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            source = self.pending[id(m)].pop()
            self.active.pop()
            x, y = _first_tensor(args), _first_tensor(out)
            in_shape = None if x is None else tuple(x.shape)
            out_shape = None if y is None else tuple(y.shape)
            if in_shape is not None and out_shape is not None and qual not in self.modules:
                self.modules[qual] = (in_shape, out_shape)
            leaf = next(m.children(), None) is None
            if not leaf and not self._fresh(m):
                return
            n = self.calls[id(m)] = self.calls.get(id(m), 0) + 1
            layer = self._layer(qual, m, in_shape or (), out_shape or (), source, n)
            self.layers.append(layer)
            if y is not None:
                self.producer[id(y)] = layer.index
                self.keep.append(y)
        return post

    def _fresh(self, m: nn.Module) -> list[nn.Parameter]:
        return [p for p in m.parameters(recurse=False) if id(p) not in self.seen]

    def _layer(self, qual: str, m: nn.Module, in_shape: Shape, out_shape: Shape,
               source: int | None, call: int) -> Layer:
        fresh = self._fresh(m)
        self.seen.update(id(p) for p in fresh)
        info = _describe(m, in_shape, out_shape)
        cost = info.pop("cost")
        own = param_cost(p.numel() for p in fresh)
        if cost.params != own.params:  # a repeated call, shared or unexpected tensors
            cost = replace(cost, weights=own.weights, biases=0)
        return Layer(index=len(self.layers), name=qual, type=type(m).__name__, cost=cost,
                     in_shape=in_shape or None, out_shape=out_shape or None, source=source,
                     call=call, **info)

    def add_unrun(self) -> None:
        """A row for every module with params the forward never reached."""
        for qual, m in self.named:
            if self._fresh(m):
                self.layers.append(self._layer(qual, m, (), (), None, 0))


class _Flow(TorchFunctionMode):
    """Follows tensors through functional ops (``F.relu``, ``x + 1``, ``x.contiguous()``):
    an output shaped like its one traced input keeps that input's producer."""

    def __init__(self, producer: dict[int, int], keep: list[torch.Tensor]) -> None:
        super().__init__()
        self.producer, self.keep = producer, keep

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and id(out) not in self.producer:
            known = [t for t in _tensors(args, kwargs) if id(t) in self.producer]
            sources = {self.producer[id(t)] for t in known}
            if len(sources) == 1 and known[0].shape == out.shape:
                self.producer[id(out)] = sources.pop()
                self.keep.append(out)
        return out


def _describe(m: nn.Module, x: Shape, y: Shape) -> dict[str, Any]:
    """Kind, geometry and cost of one leaf module on input shape ``x``, output shape ``y``.

    An empty shape means the module never ran: its params count, its MACs are 0.
    """
    numel_x, numel_y = _numel(x), _numel(y)
    if isinstance(m, (Conv1x1, nn.Conv2d)):
        k = (1, 1) if isinstance(m, Conv1x1) else (int(m.kernel_size[0]), int(m.kernel_size[1]))
        c, f, g = m.in_channels, m.out_channels, m.groups
        stride = (int(m.stride[0]), int(m.stride[1]))
        dilation = (1, 1) if isinstance(m, Conv1x1) else tuple(m.dilation)
        bias = m.bias is not None
        if len(x) < 3:
            cost = conv_cost_for_output(c, f, k, input_size=k, output_size=0, groups=g, bias=bias)
        elif isinstance(m.padding, str) or dilation != (1, 1):
            cost = conv_cost_for_output(c, f, k, input_size=spatial(x), output_size=spatial(y),
                                        groups=g, bias=bias, batch=batch_size(x))
        else:
            cost = conv_cost(c, f, k, input_size=spatial(x), stride=stride,
                             padding=(int(m.padding[0]), int(m.padding[1])), groups=g,
                             bias=bias, batch=batch_size(x))
        if k == (1, 1):
            kind = KIND_1X1
        elif g > 1 and g == c:
            kind = "depthwise"
        else:
            kind = f"conv {k[0]}×{k[1]}"
        return {"kind": kind, "kernel": k, "stride": stride, "groups": g, "channels": (c, f),
                "cost": cost}
    if isinstance(m, nn.Linear):
        rows = numel_x // m.in_features if x else 0
        return {"kind": "linear", "channels": (m.in_features, m.out_features),
                "cost": linear_cost(m.in_features, m.out_features, bias=m.bias is not None,
                                    batch=rows)}
    if isinstance(m, _NORMS):
        if isinstance(m, nn.LayerNorm):
            n, affine = _numel(tuple(m.normalized_shape)), m.elementwise_affine
        elif isinstance(m, nn.GroupNorm):
            n, affine = m.num_channels, m.affine
        elif isinstance(m, nn.LocalResponseNorm):
            n, affine = 0, False
        else:
            n, affine = m.num_features, m.affine
        has_bias = getattr(m, "bias", None) is not None
        return {"kind": "norm", "cost": norm_cost(n, affine=affine, bias=has_bias,
                                                  elements=numel_x)}
    own = [p.numel() for p in m.parameters(recurse=False)]
    cost = param_cost(own, input_elems=numel_x, output_elems=numel_y)
    if isinstance(m, _POOLS):
        size = getattr(m, "kernel_size", None)
        step = getattr(m, "stride", None)
        return {"kind": "pool", "kernel": None if size is None else _pair(size),
                "stride": None if step is None else _pair(step), "cost": cost}
    module = type(m).__module__
    if module == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention):
        kind = "act"
    elif module == "torch.nn.modules.dropout":
        kind = "dropout"
    elif isinstance(m, nn.Identity):
        kind = "identity"
    elif isinstance(m, (nn.Flatten, nn.Unflatten)):
        kind = "reshape"
    else:
        kind = "other"
    return {"kind": kind, "cost": cost}


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are shape-only meta tensors.

    The memo maps each tensor to its meta stand-in before deepcopy reaches it, so no data is
    copied; shared parameters stay shared.
    """
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"),
                                   requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    try:
        meta = copy.deepcopy(model, memo)
    except Exception as e:  # a module holding a lock, a file, a C handle…
        raise ValueError(f"expected a model that copy.deepcopy can copy, but "
                         f"{type(model).__name__} cannot be copied: {e}") from None
    return meta.to("meta").eval()


def check_shape(shape: Sequence[int]) -> Shape:
    try:
        dims = tuple(int(d) for d in shape)
        ok = len(dims) >= 1 and all(d >= 1 and d == s for d, s in zip(dims, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"expected input_shape as positive integers like (1, 3, 224, 224), "
                         f"but got {shape!r}")
    return dims


def _tensors(args: Iterable[Any], kwargs: dict[str, Any] | None) -> list[torch.Tensor]:
    out = []
    for a in [*args, *(kwargs or {}).values()]:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, Iterable) and not isinstance(value, (str, bytes)):
        for item in items:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def name_prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def spatial(shape: Shape) -> tuple[int, int]:
    return shape[-2], shape[-1]


def batch_size(shape: Shape) -> int:
    return shape[0] if len(shape) >= 4 else 1


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n if shape else 0


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and v and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[-1]))
    return None


def as_list(v: Shape | tuple[int, int] | None) -> list[int] | None:
    return None if v is None else list(v)
