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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pointwise.files import atomic_write
from pointwise.training import checkpoint as ckpt_io
from pointwise.training.data import Dataset
from pointwise.training.data import load as load_data
from pointwise.training.train import TrainConfig, build_model

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


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model in eval mode, and the checkpoint itself (one of ``pointwise
    train``, or of ``pointwise compress``, whose 1×1 pairs are rebuilt from its ranks)."""
    state = ckpt_io.load(path)
    config = TrainConfig.from_dict(state["config"])
    info = state["data"]
    model = build_model(config.model, int(info["in_channels"]), int(info["num_classes"]))
    if "compressed" in state:  # written by `pointwise compress`: rebuild its structure
        from pointwise.nn import compress_structure

        model = compress_structure(model.eval(), dict(state["compressed"]["ranks"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def export_onnx(checkpoint: str | Path, onnx_path: str | Path, *, optimize: bool = False,
                atol: float = 1e-4, opset: int = 17) -> ExportReport:
    """Export ``checkpoint`` to ``onnx_path``; raises ``RuntimeError`` if onnxruntime
    disagrees with torch by more than ``atol`` or in any argmax."""
    import onnx
    import onnxruntime as ort

    model, state = load_model(checkpoint)
    reference = model  # compare with the checkpoint's own model, so convert() is checked too
    data = _test_data(state)
    summary = ""
    if optimize:
        from pointwise.nn import convert

        model, report = convert(model)
        summary = str(report).splitlines()[0]
    shape = [int(s) for s in state["data"]["image_shape"]]
    example = torch.zeros(2, *shape)  # (N, C, H, W); N is exported as a dynamic axis
    buf = io.BytesIO()
    # the TorchScript exporter writes to file objects too, whatever its annotation says
    torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
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


def predict(source: str | Path, data: str | None = None) -> tuple[float, int, int]:
    """Accuracy of a checkpoint or an ``.onnx`` on ``data``'s test set:
    ``(accuracy, correct, total)``.

    ``data=None`` uses the data the model was trained on; with the same data, the stored
    split is reused, so a checkpoint and its export are scored on the same images.
    """
    source = Path(source)
    if source.suffix == ".onnx":
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types, by what went wrong
            raise ValueError(f"expected an ONNX model in {str(source)!r}, but onnxruntime "
                             f"could not load it: {_first_line(e)}") from None
        meta = _metadata(session, source)
        dataset = _dataset(meta["data"], meta["config"].get("seed", 0), meta["split"], data)
        name = session.get_inputs()[0].name
        try:
            logits = session.run(None, {name: dataset.x_test})[0]  # (N, K)
        except Exception as e:
            raise ValueError(f"expected {str(source)!r} to take {dataset.name}'s images "
                             f"{list(dataset.x_test.shape)}, but onnxruntime refused them: "
                             f"{_first_line(e)}") from None
    else:
        model, state = load_model(source)
        dataset = _dataset(state["config"]["data"], state["config"]["seed"], state["split"],
                           data)
        try:
            with torch.no_grad():
                logits = model(torch.from_numpy(dataset.x_test)).numpy()  # (N, K)
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


def _metadata(session: Any, source: Path) -> dict[str, Any]:
    """What export stored in the model: the data, config and split; digits by default."""
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    default: dict[str, Any] = {"data": "digits", "config": {}, "split": {}}
    if not raw:
        return default
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        meta = None
    if not (isinstance(meta, dict) and isinstance(meta.get("data"), str)
            and isinstance(meta.get("config"), dict) and isinstance(meta.get("split"), dict)):
        raise ValueError(f"expected {str(source)!r} to hold the metadata `pointwise export` "
                         f"writes under {META_KEY!r}, but it is malformed")
    return meta


def _test_data(state: dict[str, Any]) -> Dataset:
    config = state["config"]
    return _dataset(config["data"], config["seed"], state["split"], None)


def _dataset(trained_on: str, seed: int, split: dict[str, Any], data: str | None) -> Dataset:
    spec = data or trained_on
    return load_data(spec, seed=seed, split=split if spec == trained_on else None)


def _shapes(values: list[Any]) -> list[tuple[str, list[Any]]]:
    return [(v.name, list(v.shape)) for v in values]
