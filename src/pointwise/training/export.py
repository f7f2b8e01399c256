"""ONNX export of a trained checkpoint, checked in onnxruntime, and ``predict``.

``export_onnx`` rebuilds the model from the checkpoint, optionally runs
:func:`pointwise.nn.convert` (BatchNorm folded into the 1×1 convs, activations fused),
exports with the TorchScript exporter (``dynamo=False``: the dynamo exporter needs
onnxscript) with a dynamic batch axis, then runs the file in onnxruntime on random and on
real test images and requires logits within ``atol`` and the same argmax as torch. The file
is written atomically and only after it passed, so a failed check leaves no file behind.

The checkpoint's data name, seed and test indices go into the ONNX file's metadata, so
``predict MODEL.onnx --data digits`` scores the very test split the checkpoint reports.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pointwise import models
from pointwise.files import atomic_write, writable_target
from pointwise.models import create, names
from pointwise.training import checkpoint as ckpt_io
from pointwise.training.config import TrainConfig
from pointwise.training.data import Dataset
from pointwise.training.data import load as load_data

__all__ = ["ExportReport", "export_onnx", "load_model", "predict"]

INPUT, OUTPUT = "input", "logits"
META_KEY = "pointwise.training.data"


@dataclass
class ExportReport:
    path: Path
    inputs: list[tuple[str, list[Any]]]
    outputs: list[tuple[str, list[Any]]]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    optimized: str = ""

    def __str__(self) -> str:
        lines = [f"wrote {self.path}"]
        if self.optimized:
            lines.append(self.optimized)
        lines += [f"input  {n}: {s}" for n, s in self.inputs]
        lines += [f"output {n}: {s}" for n, s in self.outputs]
        lines += [f"onnxruntime vs torch on {k}: max |Δlogit| {v:.2e}, same argmax"
                  for k, v in self.max_abs_diff.items()]
        return "\n".join(lines)


def load_model(path: str | Path, model: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model in eval mode, and the checkpoint itself (one of ``pointwise
    train``, or of ``pointwise compress``, whose 1×1 pairs are rebuilt from its ranks).

    A checkpoint never chooses code to run: the model is built from the registry
    (:func:`pointwise.models.create`) under the name the checkpoint records, never by
    importing a module it names. A model trained from a ``module:attr`` factory is rebuilt
    only from a factory the caller names, ``model="pkg.module:build"`` (``--model`` on the
    command line), which may also name another registered model.

    The weights must fit the model key for key and shape for shape; that is checked on the
    meta device first, so a checkpoint claiming a billion classes allocates nothing.
    """
    state = ckpt_io.load(path)
    config = TrainConfig.from_dict(state.get("config"))
    info = state.get("data")
    counts = {k: info.get(k) if isinstance(info, dict) else None
              for k in ("in_channels", "num_classes")}
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"expected the checkpoint's data.{k} as an int >= 1 in "
                             f"{str(path)!r}, but got {v!r}")
    if model is None:
        if config.model not in names():
            raise ValueError(
                f"expected a zoo model name in {str(path)!r}, but it records "
                f"{_short(config.model)}; a checkpoint never chooses code to run, so a model "
                f"outside pointwise.models.names() is rebuilt only by the factory you name: "
                f"--model PACKAGE.MODULE:FACTORY")

        def base() -> nn.Module:
            return create(config.model, **counts)
    else:
        spec = model

        def base() -> nn.Module:
            return models.load_model(spec, **counts)[0]
    return _build(_shaped(base, state, path), state.get("model"), path).eval(), state


def _shaped(factory: Callable[[], nn.Module], state: dict[str, Any],
            path: str | Path) -> Callable[[], nn.Module]:
    """``factory``, followed by the structure ``pointwise compress`` gave the model when the
    checkpoint is one of its (each named 1×1 conv a pair of the recorded rank)."""
    if "compressed" not in state:
        return factory
    compressed = state["compressed"]
    ranks = compressed.get("ranks") if isinstance(compressed, dict) else None
    if not isinstance(ranks, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 1 for k, v in ranks.items()):
        raise ValueError(f"expected the compressed checkpoint's ranks in {str(path)!r} as "
                         f"{{layer name: int >= 1}}, but got {_short(ranks)}")
    from pointwise.nn import compress_structure

    return lambda: compress_structure(factory().eval(), dict(ranks))


def _build(factory: Callable[[], nn.Module], weights: Any, path: str | Path) -> nn.Module:
    """``factory()`` with ``weights`` loaded, once they are known to fit it exactly."""
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise ValueError(f"expected the checkpoint's model weights as a dict of named tensors "
                         f"in {str(path)!r}, but got {type(weights).__name__}")
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in factory().state_dict().items()}
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"expected the checkpoint's settings in {str(path)!r} to build its "
                         f"model, but got {type(e).__name__}: {str(e)[:200]}") from None
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if want != got:
        missing, extra = sorted(want.keys() - got), sorted(got.keys() - want)
        wrong = [k for k in want.keys() & got.keys() if want[k] != got[k]]
        what = "; ".join(f"{label} {_short(keys[:3])}" for label, keys in
                         (("missing", missing), ("unexpected", extra),
                          ("other shapes", sorted(wrong))) if keys)
        raise ValueError(f"expected the checkpoint's weights in {str(path)!r} to fit its "
                         f"model, but got {what}")
    net = factory()
    net.load_state_dict(weights)
    return net


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def export_onnx(checkpoint: str | Path, onnx_path: str | Path, *, optimize: bool = False,
                atol: float = 1e-4, opset: int = 17, model: str | None = None) -> ExportReport:
    """Export ``checkpoint`` to ``onnx_path``; raises ``RuntimeError`` if onnxruntime
    disagrees with torch by more than ``atol`` or in any argmax. ``model``: the factory
    for a checkpoint whose model is not in the registry (see :func:`load_model`)."""
    import onnx
    import onnxruntime as ort

    writable_target(onnx_path)  # a path that cannot take the file fails before the work
    net, state = load_model(checkpoint, model)
    reference = net  # compare with the checkpoint's own model, so convert() is checked too
    data = _test_data(state)
    summary = ""
    if optimize:
        from pointwise.nn import convert

        net, report = convert(net)
        summary = str(report).splitlines()[0]
    shape = list(data.x_test.shape[1:])  # (C, H, W) of the images it is checked on
    example = torch.zeros(2, *shape)  # (N, C, H, W); N is exported as a dynamic axis
    buf = io.BytesIO()
    # the TorchScript exporter writes to file objects too, whatever its annotation says
    torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                      input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"data": data.name, "config": state["config"], "split": data.split}
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    blob = proto.SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {"random": rng.standard_normal((16, *shape), dtype=np.float32),
              "test images": data.x_test}
    diffs = {}
    for name, x in inputs.items():
        with torch.no_grad():
            want = reference(torch.from_numpy(x)).numpy()  # (N, K)
        got = session.run([OUTPUT], {INPUT: x})[0]
        diff = float(np.abs(got - want).max())
        same = bool((got.argmax(1) == want.argmax(1)).all())
        if not (diff <= atol and same):
            raise RuntimeError(f"expected onnxruntime to match torch on {name} within "
                               f"{atol} with the same argmax, but got max |Δ| {diff:.3g}"
                               f"{'' if same else ' and different argmax'}; nothing written")
        diffs[name] = diff
    onnx_path = Path(onnx_path)
    with atomic_write(onnx_path) as fh:
        fh.write(blob)
    return ExportReport(onnx_path, _shapes(session.get_inputs()),
                        _shapes(session.get_outputs()), diffs, summary)


def predict(source: str | Path, data: str | None = None,
            model: str | None = None) -> tuple[float, int, int]:
    """Accuracy of a checkpoint or an ``.onnx`` on ``data``'s test set:
    ``(accuracy, correct, total)``.

    ``data=None`` uses the data the model was trained on; with the same data, the stored
    split is reused, so a checkpoint and its export are scored on the same images.
    ``model``: the factory for a checkpoint whose model is not in the registry (see
    :func:`load_model`).
    """
    source = Path(source)
    if source.suffix == ".onnx":
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types, by what went wrong
            raise ValueError(f"expected an ONNX model in {str(source)!r}, but onnxruntime "
                             f"could not load it: {_first_line(e)}") from None
        trained_on, seed, split = _metadata(session, source)
        dataset = _dataset(trained_on, seed, split, data)
        name = session.get_inputs()[0].name
        try:
            logits = session.run(None, {name: dataset.x_test})[0]  # (N, K)
        except Exception as e:
            raise ValueError(f"expected {str(source)!r} to take {dataset.name}'s images "
                             f"{list(dataset.x_test.shape)}, but onnxruntime refused them: "
                             f"{_first_line(e)}") from None
    else:
        net, state = load_model(source, model)
        dataset = _test_data(state, data)
        try:
            with torch.no_grad():
                logits = net(torch.from_numpy(dataset.x_test)).numpy()  # (N, K)
        except RuntimeError as e:
            raise ValueError(f"expected the checkpoint's model to take {dataset.name}'s images "
                             f"{list(dataset.x_test.shape)}, but it refused them: "
                             f"{_first_line(e)}") from None
    if logits.ndim != 2 or len(logits) != len(dataset.y_test):
        raise ValueError(f"expected logits of shape (N, classes) for {len(dataset.y_test)} "
                         f"images, but got {list(logits.shape)}")
    correct = int((logits.argmax(1) == dataset.y_test).sum())
    return correct / len(dataset.y_test), correct, len(dataset.y_test)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _metadata(session: Any, source: Path) -> tuple[str, int, dict[str, Any]]:
    """The data name, seed and split that :func:`export_onnx` stored in the model, checked
    (the file may come from anywhere); digits and a fresh split when there are none."""
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    if not raw:
        return "digits", 0, {}
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"expected JSON in {str(source)!r}'s {META_KEY!r} metadata, but "
                         f"could not parse it ({type(e).__name__})") from None
    config = meta.get("config") if isinstance(meta, dict) else None
    seed = config.get("seed", 0) if isinstance(config, dict) else None
    if (not isinstance(meta, dict) or not isinstance(meta.get("data"), str)
            or isinstance(seed, bool) or not isinstance(seed, int)
            or not isinstance(meta.get("split", {}), dict)):
        raise ValueError(f"expected {str(source)!r}'s {META_KEY!r} metadata to hold a data "
                         f"name, a config with an int seed and a split, as `pointwise export` "
                         f"writes them, but got {_short(meta)}")
    return meta["data"], seed, meta.get("split", {})


def _test_data(state: dict[str, Any], data: str | None = None) -> Dataset:
    config = TrainConfig.from_dict(state["config"])  # checked by load_model already
    return _dataset(config.data, config.seed, state.get("split", {}), data)


def _dataset(trained_on: str, seed: int, split: dict[str, Any], data: str | None) -> Dataset:
    spec = data or trained_on
    return load_data(spec, seed=seed, split=split if spec == trained_on else None)


def _shapes(values: list[Any]) -> list[tuple[str, list[Any]]]:
    return [(v.name, list(v.shape)) for v in values]
