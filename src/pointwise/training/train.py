"""The trainer: any zoo model (or ``module:attr`` factory) on digits or an ``.npz``.

>>> from pointwise.training.train import TrainConfig
>>> TrainConfig().epochs, TrainConfig().optimizer, TrainConfig(optimizer="sgd").learning_rate
(20, 'adamw', 0.1)

Each epoch writes ``OUT/checkpoint.pt`` atomically (see :mod:`pointwise.training.checkpoint`), and
``resume=True`` continues from it. Shuffling comes from a ``DistributedSampler`` (with one
replica when not distributed), whose permutation is a function of ``(seed, epoch)`` alone,
so a resumed run draws the same batches without replaying anything.

Determinism — what is equal to what:

* **Bitwise**: two runs with the same config, seed, thread count (``--threads``) and process
  layout (single process, or the same number of DDP ranks), on the same machine and torch
  build. An interrupted run resumed from its checkpoint ends bitwise equal to the
  uninterrupted run under the same conditions: the checkpoint holds the exact float state of
  model, optimizer, scheduler and every RNG. The tests check this on one thread; it also
  held on two threads when checked by hand.
* **Not bitwise** with a different thread count (BLAS and reductions split their sums
  differently), W DDP ranks against one process with the same global batch (gradients are
  summed in another order), or another machine or torch build. The first step differs by
  float rounding (~1e-7); training amplifies it. Measured: DDP 2 ranks vs 1 process, 6 SGD
  steps, no BatchNorm: max |Δw| 7e-9 (the test's tolerance is 1e-6). 1 vs 2 threads, 24
  AdamW steps of nin_digits: max |Δw| 0.04, a different trajectory; full default runs end
  within a test sample or two of each other (seed 0: 98.89% vs 99.11%).

``torch.use_deterministic_algorithms(True, warn_only=True)`` is on while training (no op
of the digits models warned), and the previous setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DistributedSampler, TensorDataset

from pointwise.training import checkpoint as ckpt_io
from pointwise.training import distributed as dist_io
from pointwise.training.config import DEFAULT_LR, TrainConfig
from pointwise.training.data import Dataset
from pointwise.training.data import load as load_data

__all__ = ["CHECKPOINT", "DEFAULT_LR", "TrainConfig", "TrainResult", "build_model",
           "evaluate", "train"]

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    epochs: int
    test_accuracy: float
    test_loss: float
    seconds: float
    checkpoint: Path | None
    history: list[dict[str, float]]


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A zoo name (``pointwise.models.names()``) or ``package.module:factory``."""
    from pointwise.models import load_model

    return load_model(name, num_classes=num_classes, in_channels=in_channels)[0]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (0..1) of ``model`` in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size])  # (n, K)
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return loss / len(y), correct / len(y)


def train(config: TrainConfig, out: str | Path | None = None, *, resume: bool = False,
          threads: int | None = 1, device: str = "cpu", distributed: bool = False,
          log: Callable[[str], None] = print, progress: bool = True,
          stop_after_epochs: int | None = None) -> TrainResult:
    """Train ``config`` and write ``out/checkpoint.pt`` after every epoch.

    Args:
        out: folder for checkpoints (created); None trains without writing.
        resume: continue from ``out/checkpoint.pt`` if it exists (else start, saying so);
            its config must equal ``config`` except ``epochs``: a different ``epochs``
            (at least those done) extends or shortens the run, the one-cycle schedule then
            spanning the new length from the step reached (so an extended run is not
            bitwise equal to one that had that length from the start).
        threads: torch intra-op threads while training (restored afterwards); None keeps
            torch's setting. The default is 1: for models this small a second thread gains
            little, and on a busy machine OpenMP's spinning barriers made 2 threads 5-20×
            slower (measured: nin_digits 4.7 s on 1 thread, 26-91 s on 2 while another job
            ran); a fixed default also makes default runs bitwise-reproducible on any CPU
            count.
        device: torch device. ``threads`` and ``device`` do not change the stored config.
        distributed: join torchrun's process group (see :mod:`pointwise.training.distributed`).
        log: where the per-epoch lines and the summary go (rank 0 only).
        progress: a tqdm bar per epoch on stderr when it is a terminal (rank 0 only).
        stop_after_epochs: return after this many epochs of this call, as an interruption
            would (tests use it).
    """
    config.validate()
    ctx = dist_io.setup(device) if distributed else dist_io.Context()
    if config.batch_size % ctx.world_size:
        raise ValueError(f"expected --batch-size divisible by the {ctx.world_size} processes, "
                         f"but got {config.batch_size}")
    threads_before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"expected --threads ≥ 1, but got {threads}")
        torch.set_num_threads(threads)
    path = Path(out) / CHECKPOINT if out is not None else None
    state = _resume_state(path, config, log if ctx.is_main else _quiet) if resume else None
    try:
        with _deterministic(), warnings.catch_warnings():
            # DDP warns when a grad's strides differ from its bucket's; for a 1-channel stem
            # (F, 1, 3, 3) they differ only on the size-1 axis, where a stride means nothing
            warnings.filterwarnings("ignore", "Grad strides do not match bucket view")
            return _run(config, ctx, path, state, torch.device(device),
                        log if ctx.is_main else _quiet, progress and ctx.is_main,
                        stop_after_epochs)
    finally:
        torch.set_num_threads(threads_before)
        if distributed:
            dist_io.teardown()


def _run(config: TrainConfig, ctx: dist_io.Context, path: Path | None,
         state: dict[str, Any] | None, device: torch.device, log: Callable[[str], None],
         progress: bool, stop_after: int | None) -> TrainResult:
    data = load_data(config.data, seed=config.seed, split=state["split"] if state else None)
    _seed_everything(config.seed)
    model = build_model(config.model, data.in_channels, data.num_classes).to(device)
    x, y, x_test, y_test = (torch.from_numpy(a).to(device) for a in
                            (data.x_train, data.y_train, data.x_test, data.y_test))
    sampler: DistributedSampler = DistributedSampler(
        TensorDataset(y), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
        seed=config.seed, drop_last=True)
    # drop_last: every step has exactly B samples, so a BatchNorm never sees a batch of 1
    # and W ranks split every step evenly, as the single-process run does.
    batches = BatchSampler(sampler, config.batch_size // ctx.world_size, drop_last=True)
    steps = len(batches) if config.limit_batches is None else min(len(batches),
                                                                  config.limit_batches)
    if steps == 0:
        raise ValueError(f"expected at least one batch of {config.batch_size}, but got "
                         f"{len(y)} training samples; lower --batch-size")
    optimizer = _optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps)
    start, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])
        if int(state["config"]["epochs"]) == config.epochs:
            scheduler.load_state_dict(state["scheduler"])
        else:  # a new length: the one-cycle schedule spans it, taken up at the step reached
            _seek(scheduler, start * steps)
        ckpt_io.set_rng_state(state["rng"])
        was = int(state["config"]["epochs"])
        log(f"resumed from {path} after epoch {start}/{was}"
            + (f", extended to {config.epochs} epochs" if was != config.epochs else ""))
    net = nn.parallel.DistributedDataParallel(model) if ctx.world_size > 1 else model
    if ctx.is_main and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt_io.remove_stale_temps(path)
    if start == 0:
        log(f"training {config.model} on {data} for {config.epochs} epochs of {steps} steps "
            f"({sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{torch.get_num_threads()} threads, {ctx.world_size} process(es))")
    t0 = time.perf_counter()
    test_loss, test_acc = math.nan, math.nan
    for epoch in range(start, config.epochs):
        sampler.set_epoch(epoch)
        t_epoch = time.perf_counter()
        train_loss = _epoch(net, optimizer, scheduler, _take(iter(batches), steps), x, y,
                            f"epoch {epoch + 1}/{config.epochs}", steps,
                            ctx.world_size, progress)
        (train_loss,) = dist_io.all_mean(ctx, train_loss)
        if ctx.is_main:
            test_loss, test_acc = evaluate(model, x_test, y_test)
            history.append({"epoch": epoch + 1, "train_loss": train_loss,
                            "test_loss": test_loss, "test_accuracy": test_acc})
            log(f"epoch {epoch + 1:>3}/{config.epochs}  train loss {train_loss:.4f}  "
                f"test loss {test_loss:.4f}  test acc {100 * test_acc:6.2f}%  "
                f"({time.perf_counter() - t_epoch:.1f} s)")
            if path is not None:
                ckpt_io.save(path, _state(config, data, epoch + 1, model, optimizer,
                                          scheduler, history, ctx.world_size))
        if stop_after is not None and epoch + 1 - start >= stop_after:
            break
    seconds = time.perf_counter() - t0
    if history:
        test_loss, test_acc = history[-1]["test_loss"], history[-1]["test_accuracy"]
    done = int(history[-1]["epoch"]) if history else start
    if ctx.is_main:
        log(f"done: {config.model} on {data.name}, epoch {done}/{config.epochs}, "
            f"{seconds:.1f} s; test accuracy {100 * test_acc:.2f}% "
            f"({round(test_acc * len(y_test))}/{len(y_test)}), test loss {test_loss:.4f}"
            + (f"; checkpoint {path}" if path is not None else ""))
    dist_io.barrier(ctx)
    return TrainResult(done, test_acc, test_loss, seconds, path, history)


def _epoch(net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
           batches: Iterator[list[int]], x: torch.Tensor, y: torch.Tensor, desc: str,
           steps: int, world: int, progress: bool) -> float:
    """One pass; returns the mean training loss of this rank. The bar shows all ranks'
    throughput, assuming they keep pace (DDP's all-reduce makes them)."""
    from tqdm import tqdm

    net.train()
    total, seen, t0 = 0.0, 0, time.perf_counter()
    # a live bar on a terminal only: piped, its carriage returns are noise (the epoch lines
    # are the progress there)
    bar = tqdm(total=steps, desc=desc, unit="step", file=sys.stderr, leave=False,
               disable=not (progress and sys.stderr.isatty()), dynamic_ncols=True)
    with bar:
        for idx in batches:
            index = torch.as_tensor(idx)
            loss = F.cross_entropy(net(x[index]), y[index])  # x[index]: (B/W, C, H, W)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.update()
            rate = seen * world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{rate:.0f}")
    return total / max(seen, 1)


def _take(it: Iterator[list[int]], n: int) -> Iterator[list[int]]:
    for _ in range(n):
        yield next(it)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9,
                               nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                             weight_decay=config.weight_decay)


def _state(config: TrainConfig, data: Dataset, epoch: int, model: nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any,
           history: list[dict[str, float]], world_size: int) -> dict[str, Any]:
    """What a checkpoint holds: tensors and primitives only (weights_only-loadable)."""
    return {
        "config": config.to_dict(),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": ckpt_io.get_rng_state(),
        "split": data.split,
        "data": {"name": data.name, "num_classes": data.num_classes,
                 "in_channels": data.in_channels, "image_shape": list(data.x_train.shape[1:])},
        "history": history,
        "world_size": world_size,  # resuming on another count is allowed, not bitwise
    }


def _resume_state(path: Path | None, config: TrainConfig,
                  log: Callable[[str], None]) -> dict[str, Any] | None:
    if path is None:
        raise ValueError("expected --out DIR with --resume, but got none")
    if not path.exists():  # so one command serves the first start and every restart
        log(f"no checkpoint at {path} yet: starting from epoch 0")
        return None
    state = ckpt_io.load(path)
    if "compressed" in state:
        raise ValueError(f"expected a checkpoint of `pointwise train` to resume, but {path} "
                         f"was written by `pointwise compress` and holds no optimizer state; "
                         f"choose another --out")
    stored = state["config"]
    done = int(state["epoch"])
    if config.epochs < done:
        raise ValueError(f"expected --epochs ≥ {done} to resume {path}, which has done {done} "
                         f"epochs, but got {config.epochs}")
    # more (or fewer) epochs is a longer (shorter) run of the same training; anything else
    # would be another run
    diff = {k: (stored.get(k), v) for k, v in config.to_dict().items()
            if stored.get(k) != v and k != "epochs"}
    if diff:
        what = ", ".join(f"{k} {a!r} (checkpoint) vs {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"expected the checkpoint's settings to resume {path}, but got "
                         f"{what}; drop those options or start a new --out")
    return state


def _seek(scheduler: Any, step: int) -> None:
    """Step a fresh schedule ``step`` times (learning rate and momentum), as if it had run."""
    with warnings.catch_warnings():  # "step() before optimizer.step()": on purpose here
        warnings.simplefilter("ignore")
        for _ in range(step):
            scheduler.step()


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    was, warn = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)


def _quiet(_: str) -> None:
    pass
