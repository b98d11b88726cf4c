"""Stage 4: train one model with a recipe and evaluate it on the test set after every epoch.

Metrics stay on the device during an epoch and are read once at its end: a per-batch `.item()` would make
every step wait for the device.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from job.outcome.status import DIVERGED, RunFailure
from job.settings import Recipe
from job.training.augment import random_shift, vary
from job.training.data import Split, batches

# tqdm's default lock is a multiprocessing RLock: a named semaphore in every process that makes a bar, which a
# worker killed by the OOM killer leaks (and the resource tracker then warns about on stderr). Only one process
# ever draws bars here (the workers draw none), so a thread lock is enough.
tqdm.set_lock(threading.RLock())


class EpochBar:
    """A progress bar within each epoch, for a terminal only (logs get one line per epoch), erased when the epoch
    ends. Its size is fixed: tqdm hides bars on a terminal that reports no size (a fresh pty, `docker run -t`)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: tqdm | None = None
        self.on_a_terminal = sys.stdout.isatty()

    def __call__(self, epoch: int, step: int, steps: int) -> None:
        if not self.on_a_terminal:
            return
        if step == 1:
            self.bar = tqdm(total=steps, desc=f"{self.label} Epoch:{epoch:2d}", file=sys.stdout, leave=False,
                            ascii=".#", bar_format="{desc} [{bar:30}] {n_fmt}/{total_fmt}", mininterval=0,
                            miniters=max(1, steps // 100), ncols=80, nrows=2)
        if self.bar is not None:
            self.bar.update()
            if step == steps:
                self.bar.close()
                self.bar = None


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_accuracy: float
    train_loss: float
    test_accuracy: float
    test_loss: float
    seconds: float
    learning_rate: float  # at the end of the epoch


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    predictions: torch.Tensor  # int64 [N], on the CPU
    logits: torch.Tensor  # float32 [N, 10], on the CPU


class Diverged(RunFailure):
    """The loss became infinite, NaN, or far worse than guessing: the run stops before anything is exported."""

    status = DIVERGED


UNIFORM_GUESS_LOSS = math.log(10)  # cross-entropy of a model that gives each digit 1/10
DIVERGED_EPOCH_LOSS = 10 * UNIFORM_GUESS_LOSS  # an epoch's mean loss above this learned nothing (ln 10 = 2.30)
DIVERGED_STEP_LOSS = 100 * UNIFORM_GUESS_LOSS  # one step's loss above this is exploding: stop at once


def stop_if_diverged(loss: float, epoch: int, what: str = "training loss", limit: float = DIVERGED_EPOCH_LOSS) -> None:
    """A learning rate too high shows as a loss that explodes (to NaN, or to 1e10 while staying finite) or stays
    many times above a uniform guess's; a healthy run starts at about 2.30 and goes down."""
    if not math.isfinite(loss):
        raise Diverged(f"the {what} became {loss} at epoch {epoch} (try a lower LENET_LEARNING_RATE)")
    if loss > limit:
        raise Diverged(f"the {what} reached {loss:.3g} at epoch {epoch}, far above the {UNIFORM_GUESS_LOSS:.2f} of a "
                       f"uniform guess (try a lower LENET_LEARNING_RATE)")


def evaluate(model: nn.Module, split: Split, batch_size: int) -> Evaluation:
    model.eval()
    loss_sum = torch.zeros((), device=split.images.device)
    outputs = []
    with torch.inference_mode():
        for images, labels in batches(split, batch_size):
            logits = model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            outputs.append(logits)
    logits = torch.cat(outputs)
    predicted = logits.argmax(1)
    accuracy = (predicted == split.labels).sum().item() / len(split)
    return Evaluation(accuracy, loss_sum.item() / len(split), predicted.cpu(), logits.cpu())


def sgd(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch; returns the batch's logits and loss."""
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


def train_model(model: nn.Module, train: Split, test: Split, recipe: Recipe, *, device: torch.device, seed: int,
                eval_batch_size: int,
                on_epoch: Callable[[EpochMetrics], None] = lambda metrics: None,
                check_stop: Callable[[], None] = lambda: None,
                on_step: Callable[[int, int, int], None] = lambda epoch, step, steps: None
                ) -> tuple[list[EpochMetrics], Evaluation]:
    """Train for the recipe's epochs; return each epoch's metrics and the final model's test evaluation.
    `model`, `train` and `test` must be on `device`. `on_step(epoch, step, steps per epoch)` is called as each step
    starts: a terminal's progress bar (EpochBar), or the status line of variants side by side (job.running.pool)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = sgd(model, recipe)
    steps_per_epoch = -(-len(train) // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch) \
        if recipe.lr_schedule == "onecycle" else None
    batch_norm = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    check_each_step = device.type == "cpu"  # free on a CPU; on an accelerator it would wait for every step
    history = []
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        model.train()
        correct = torch.zeros((), dtype=torch.long, device=device)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for step, (images, labels) in enumerate(batches(train, recipe.batch_size, generator), 1):
            check_stop()  # raises Interrupted once a stop signal came
            on_step(epoch, step, steps_per_epoch)
            if len(labels) == 1 and batch_norm:  # a last batch of one image: BatchNorm cannot normalize it
                continue
            seen += len(labels)
            if recipe.augment:
                images = vary(images, generator)
            if recipe.max_shift:
                images = random_shift(images, recipe.max_shift, generator)
            logits, loss = train_step(model, optimizer, images, labels)
            if check_each_step:
                stop_if_diverged(loss.item(), epoch, limit=DIVERGED_STEP_LOSS)
            if scheduler is not None:
                scheduler.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(labels)
                correct += (logits.argmax(1) == labels).sum()
        evaluation = evaluate(model, test, eval_batch_size)
        metrics = EpochMetrics(epoch, correct.item() / seen, loss_sum.item() / seen,
                               evaluation.accuracy, evaluation.loss, time.perf_counter() - started,
                               optimizer.param_groups[0]["lr"])
        stop_if_diverged(metrics.train_loss, epoch)
        stop_if_diverged(metrics.test_loss, epoch, what="test loss")
        history.append(metrics)
        on_epoch(metrics)
    return history, evaluation
