"""Which (conv, BatchNorm, activation) chains of a model :func:`pointwise.nn.convert` may fold.

When is "directly follows" known? The converter does not guess from attribute names.
It reads the data flow with ``torch.fx`` symbolic tracing, and folds or fuses a pair only
where the graph proves all of these:

* the conv's output feeds exactly one node, the BN (or activation) module, as its only input;
* the conv, the BN and the activation modules are each called once in the graph and held at
  one place in the model (a ``ReLU`` that a torchvision ``Bottleneck`` calls three times is
  therefore never fused);
* the modules are the stock classes (a subclass may do something else).

This covers ``nn.Sequential`` chains and the ``conv1 → bn1 → relu`` attribute triples of
torchvision-style blocks, whatever their names. What it cannot see:

* A module whose forward cannot be traced (data-dependent control flow, such as
  ``if x.sum() > 0``): the converter descends into its children and traces those instead;
  for an untraceable plain ``nn.Sequential`` it uses the order of its children. What lies
  between those children in the untraceable forward is not seen, so nothing is folded
  across it; such modules are listed in the report.
* Python-level branches on non-tensor values are recorded as they run at conversion time,
  in eval mode. A forward that takes a different path later (a flag flipped after
  conversion) is not covered.
* Activations applied as functions (``F.relu(x)``, ``x.relu()``) are not modules and stay
  where they are; the BN before them is still folded.

A module with hooks (forward, forward-pre, backward or backward-pre) is never part of a
chain: folding or fusing would drop its hooks or change what they see.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.fx
from torch import nn

from pointwise.nn.conv2d import Conv2d
from pointwise.nn.module import ACTIVATION_MODULES, Conv1x1
from pointwise.nn.pool import MaxPool2d
from pointwise.nn.report import ConvertReport

__all__ = ["FUSABLE", "find_chains", "hooks", "qualified"]

#: The activation modules a Conv1x1 can take over, and its name for each.
FUSABLE: dict[type[nn.Module], str] = {cls: name for name, cls in ACTIVATION_MODULES.items()}


_HOOKS = {"forward-pre": "_forward_pre_hooks", "forward": "_forward_hooks",
          "backward-pre": "_backward_pre_hooks", "backward": "_backward_hooks"}


def hooks(m: nn.Module) -> str | None:
    """Why ``m`` must be left as it is because of its hooks ("has forward hooks"), or None."""
    kinds = [kind for kind, attr in _HOOKS.items() if getattr(m, attr, None)]
    if not kinds:
        return None
    return (f"has {' and '.join(kinds)} hooks, which converting it would drop or change; "
            f"remove them, or register them after convert()")


def qualified(prefix: str, name: str) -> str:
    """``name`` under the module at ``prefix`` ("" for the model itself)."""
    return f"{prefix}.{name}" if prefix else name


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # pointwise's modules as torch's: their forward checks are no data flow to trace
        return isinstance(m, (Conv1x1, Conv2d, MaxPool2d)) or \
            super().is_leaf_module(m, qualname)


def find_chains(
    module: nn.Module,
    prefix: str,
    places: Counter,
    fold: bool,
    fuse: bool,
    chains: list,
    report: ConvertReport,
    fold_all: bool = False,
) -> None:
    """Append the (conv, bn, act) chains under ``module`` that are provably direct."""
    if _is_chain_head(module, fold_all) or not any(True for _ in module.children()):
        return
    try:
        graph = _Tracer().trace(module)
    except Exception as e:  # any failure means: not traceable as a whole
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if type(module).forward is nn.Sequential.forward:
            _sequential_chains(module, prefix, places, fold, fuse, chains, fold_all)
            why = f"not traceable ({reason}); used the order of its children"
        else:
            why = f"not traceable ({reason}); its children are converted one by one"
        report.skipped.append((prefix or "(model)", why))
        for name, child in module.named_children():
            find_chains(child, qualified(prefix, name), places, fold, fuse, chains, report,
                         fold_all)
        return
    _graph_chains(module, graph, prefix, places, fold, fuse, chains, report, fold_all)


def _is_chain_head(m: nn.Module, fold_all: bool) -> bool:
    """A conv a chain can start at: a Conv1x1 or Conv2d, or with ``fold_all`` any stock
    nn.Conv2d; none with hooks."""
    return (isinstance(m, (Conv1x1, Conv2d)) or (fold_all and type(m) is nn.Conv2d)) \
        and hooks(m) is None


def _activation_taken(conv: nn.Module) -> bool:
    """True when the conv already applies an activation, so none can follow it into it."""
    return isinstance(conv, (Conv1x1, Conv2d)) and conv.activation is not None


def _graph_chains(module, graph, prefix, places, fold, fuse, chains, report,
                  fold_all=False) -> None:
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def single(node: torch.fx.Node, kinds: tuple[type, ...]) -> nn.Module | None:
        """The module of ``node``'s one user if it is a once-called ``kinds`` on ``node`` alone."""
        users = list(node.users)
        if len(users) != 1:
            return None
        u = users[0]
        if u.op != "call_module" or u.args != (node,) or u.kwargs:
            return None
        m = module.get_submodule(u.target)
        if type(m) not in kinds or calls[u.target] != 1 or places[id(m)] != 1 or hooks(m):
            return None
        return m

    for node in graph.nodes:
        if node.op != "call_module":
            continue
        conv = module.get_submodule(node.target)
        if not _is_chain_head(conv, fold_all) or calls[node.target] != 1 \
                or places[id(conv)] != 1:
            continue
        bn_name = act_name = None
        cur = node
        if fold and single(cur, (nn.BatchNorm2d,)) is not None:
            cur = next(iter(cur.users))
            bn_name = qualified(prefix, cur.target)
        if fuse and not _activation_taken(conv):
            act = single(cur, tuple(FUSABLE))
            if act is not None:
                act_name = qualified(prefix, next(iter(cur.users)).target)
            else:
                _report_shared_activation(module, cur, calls, prefix, report)
        if bn_name or act_name:
            chains.append((qualified(prefix, node.target), bn_name, act_name))


def _report_shared_activation(module, node, calls, prefix, report) -> None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module":
        target = users[0].target
        entry = (qualified(prefix, target), f"called {calls[target]} times in forward; not fused")
        if type(module.get_submodule(target)) in FUSABLE and calls[target] > 1 \
                and entry not in report.skipped:
            report.skipped.append(entry)


def _sequential_chains(seq, prefix, places, fold, fuse, chains, fold_all=False) -> None:
    mods = list(seq.named_children())
    for i, (name, conv) in enumerate(mods):
        if not _is_chain_head(conv, fold_all) or places[id(conv)] != 1:
            continue
        j, bn_name, act_name = i + 1, None, None
        if fold and j < len(mods) and type(mods[j][1]) is nn.BatchNorm2d \
                and places[id(mods[j][1])] == 1 and hooks(mods[j][1]) is None:
            bn_name, j = qualified(prefix, mods[j][0]), j + 1
        if fuse and not _activation_taken(conv) and j < len(mods) \
                and type(mods[j][1]) in FUSABLE \
                and places[id(mods[j][1])] == 1 and hooks(mods[j][1]) is None:
            act_name = qualified(prefix, mods[j][0])
        if bn_name or act_name:
            chains.append((qualified(prefix, name), bn_name, act_name))
