"""Training and testing: ``train`` and ``test`` with the assignment's signatures.

A ``DataLoader`` draws each batch from the uint8 ImageSet with one tensor index, the batch is augmented as a whole
(augment.py) and fed in channels_last layout, which runs the depthwise convolutions faster on a CPU (the benchmark
measures it). Saving, printing and studies that follow every step are callbacks."""
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from .augment import augment
from .checkpoint import load_weights_into
from .config import Config
from .data import ImageSet
from .errors import UserError
from .losses import make_loss, make_optimizer
from .model import ConvDw, MobileNetLab, autocast_dtype, fused_for_inference

MEMORY_FORMAT = torch.channels_last
CHECK_BN_IMAGES = 1024  # validation re-measures batch-norm statistics on this many training images first


@dataclass
class Predictions:
    """What :func:`test` returns: labels, class probabilities, and with true labels the mean loss and accuracy."""
    labels: torch.Tensor
    probs: torch.Tensor
    loss: float | None = None
    accuracy: float | None = None


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=MEMORY_FORMAT) if x.dim() == 4 else x


@torch.inference_mode()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 128,
             fuse: bool = True) -> Predictions:
    """Run ``net`` over ``x`` in eval mode and float32, as a copy with batch norms folded in unless ``fuse`` is off;
    batches of 128 keep the activations in the CPU's caches."""
    net.eval()
    if fuse and isinstance(net, MobileNetLab):
        net = fused_for_inference(net)
    device = next(net.parameters()).device
    # One output tensor, allocated once: small tensors kept from every batch pin the freed
    # activation buffers apart in malloc's heap, which then grows by tens of MB per few batches.
    probs, total_loss = torch.empty(0, 0), 0.0
    for start in range(0, len(x), batch_size):
        logits = net(to_device(x[start:start + batch_size], device)).float()
        if y is not None:
            total_loss += float(nn.functional.cross_entropy(logits, y[start:start + batch_size].to(device),
                                                            reduction="sum"))
        if start == 0:
            probs = torch.empty(len(x), logits.shape[1])
        probs[start:start + len(logits)] = torch.softmax(logits, 1).cpu()
    labels = probs.argmax(1) if len(probs) else torch.empty(0, dtype=torch.int64)
    if y is None or len(y) == 0:
        return Predictions(labels, probs)
    return Predictions(labels, probs, total_loss / len(y), float((labels == y).float().mean()))


def test(net: nn.Module, model=None, test_set_x: torch.Tensor | None = None,
         test_set_y: torch.Tensor | None = None) -> Predictions:
    """Predict the classes of ``test_set_x`` with ``net`` (or with the weights of the saved ``model``)."""
    if model is not None:
        load_weights_into(net, model)
    if test_set_x is None:
        raise UserError("test() needs test_set_x, the images to classify")
    return evaluate(net, test_set_x, test_set_y)


def warm_up_share(steps: int, decay: float) -> float:
    """The share of the current weights in the average's ``steps``-th update: 1 - min(decay, (1+n)/(10+n))."""
    return 1.0 - min(decay, (1 + steps) / (10 + steps))


@torch.no_grad()
def blend_into(average, current, share: float) -> None:
    """Move each float tensor of ``average`` ``share`` of the way to ``current``'s; copy the counters."""
    for avg, now in zip(average, current):
        if avg.is_floating_point():
            avg.lerp_(now, share)
        else:
            avg.copy_(now)


class WeightAverage:
    """An exponential moving average of a network's weights ("EMA" in timm): after each step the copy moves
    ``warm_up_share`` of the way to the trained weights, so early weights fade fast and later steps smooth out."""

    def __init__(self, net: nn.Module, decay: float):
        self.module, self.decay, self.steps = copy.deepcopy(net), decay, 0
        # the tensors themselves, once: both networks change them in place (state_dict() each step costs time)
        self._average, self._current = list(self.module.state_dict().values()), list(net.state_dict().values())

    def update(self) -> None:
        self.steps += 1
        blend_into(self._average, self._current, warm_up_share(self.steps, self.decay))


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Measure the batch-norm statistics of ``net``'s weights afresh on ``x`` (``swa_utils.update_bn``): the running
    ones lag the weights at the schedule's peak, and an average of weights has none of its own."""
    device = next(net.parameters()).device
    torch.optim.swa_utils.update_bn((to_device(x[i:i + batch_size], device) for i in range(0, len(x), batch_size)),
                                    net)
    return net


@dataclass
class History:
    """Per-epoch figures (training ones on the augmented batches), the best validation epoch and the kept one."""
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)       # the whole epoch, validation included
    step_seconds: list[float] = field(default_factory=list)  # its training steps (callbacks not counted)
    data_seconds: list[float] = field(default_factory=list)  # of those, waiting for batches
    best_epoch: int = 0
    kept_epoch: int = 0
    kept_val_loss: float | None = None  # the kept weights, batch-norm statistics re-measured on all training images
    kept_val_acc: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def whole_batch(batch):
    """The DataLoader's collate function: ImageSet.__getitems__ already made the batch."""
    return batch


class EpochOrder(Sampler):
    """Each epoch's order from ``generator`` (a resume restores it): a permutation, or class-balanced draws."""

    def __init__(self, labels: torch.Tensor, balanced: bool, generator: torch.Generator):
        self.labels, self.balanced, self.generator = labels, balanced, generator

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        if self.balanced:
            weights = 1.0 / torch.bincount(self.labels).float()[self.labels]
            return iter(torch.multinomial(weights, len(self.labels), replacement=True, generator=self.generator).tolist())
        return iter(torch.randperm(len(self.labels), generator=self.generator).tolist())


def batches(train_set: ImageSet, config: Config, generator: torch.Generator, device: torch.device) -> DataLoader:
    """The training DataLoader: batches of ``config.batch_size`` in the order of :class:`EpochOrder`."""
    return DataLoader(train_set, batch_size=config.batch_size, sampler=EpochOrder(
        train_set.labels, config.balance == "sampler", generator), collate_fn=whole_batch,
        pin_memory=device.type == "cuda")


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Run:
    """One training run's state (network, optimiser, schedule, average, generator, history, best weights);
    ``state_dict`` is what ``--resume`` continues from."""

    def __init__(self, net: nn.Module, config: Config, train_y: torch.Tensor, steps_per_epoch: int):
        self.net, self.config, self.device = net, config, next(net.parameters()).device
        self.autocast = autocast_dtype(config.precision, not any(isinstance(m, ConvDw) for m in net.modules()),
                                       self.device)
        self.loss_fn = make_loss(config, train_y, net.fc.out_features).to(self.device)
        self.optimizer = make_optimizer(config, net.parameters())
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.learning_rate, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=0.2)
        net.to(memory_format=MEMORY_FORMAT)
        self.average = WeightAverage(net, config.average_decay) if config.average_decay else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch, self.history, self.best_state, self.epoch, self.step = steps_per_epoch, History(), None, 0, 0
        self.epoch_started, self.seen, self.loss_sum, self.correct = 0.0, 0, 0.0, 0
        self.data_seconds = self.callback_seconds = self.step_seconds = 0.0

    @property
    def judged(self) -> nn.Module:
        """The weights validation judges and the run returns: the average, when averaging."""
        return self.average.module if self.average is not None else self.net

    def start_epoch(self, epoch: int) -> None:
        self.net.train()
        self.epoch, self.epoch_started = epoch, time.perf_counter()
        self.seen, self.loss_sum, self.correct, self.data_seconds, self.callback_seconds = 0, 0.0, 0, 0.0, 0.0

    def end_steps(self) -> None:
        self.step_seconds = time.perf_counter() - self.epoch_started - self.callback_seconds

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """One optimiser step (the forward pass in bfloat16 autocast when asked); the loss is checked first."""
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.net(xb).float()
        loss = self.loss_fn(logits, yb)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {self.epoch}, step {self.step + 1}: "
                                   f"lower the learning rate (--learning-rate {self.config.learning_rate:g} now); "
                                   f"nothing was saved")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        self.scheduler.step()
        self.step += 1
        self.seen += len(yb)
        self.loss_sum += loss.item() * len(yb)
        self.correct += int((logits.argmax(1) == yb).sum())

    def validate(self, valid_x: torch.Tensor, valid_y: torch.Tensor, train_x: torch.Tensor) -> Predictions:
        """Judge a copy of the kept weights with batch-norm statistics measured on CHECK_BN_IMAGES training images."""
        judge = copy.deepcopy(self.judged)
        recalibrate_batch_norm(judge, train_x[::max(1, len(train_x) // CHECK_BN_IMAGES)][:CHECK_BN_IMAGES])
        return evaluate(judge, valid_x, valid_y)

    def end_epoch(self, val: Predictions) -> None:
        h, now = self.history, time.perf_counter()
        for name, value in (("epoch", self.epoch), ("train_loss", self.loss_sum / self.seen),
                            ("train_acc", self.correct / self.seen), ("val_loss", val.loss), ("val_acc", val.accuracy),
                            ("lr", self.optimizer.param_groups[0]["lr"]), ("seconds", now - self.epoch_started),
                            ("data_seconds", self.data_seconds)):
            getattr(h, name).append(value)
        h.step_seconds.append(self.step_seconds)
        # Ties go to the later epoch: on a few hundred images accuracy moves in steps of one image,
        # and a later epoch at the same accuracy is further down the schedule.
        if h.best_epoch == 0 or val.accuracy >= h.val_acc[h.best_epoch - 1]:
            h.best_epoch = self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.judged.state_dict().items()}

    def finish(self, train_x: torch.Tensor, valid_x: torch.Tensor, valid_y: torch.Tensor) -> History:
        """Put the kept epoch's weights into the network, re-measure batch norm on all training images, judge."""
        h = self.history
        h.kept_epoch = h.best_epoch if self.config.keep == "best" else self.epoch
        self.net.load_state_dict(self.best_state if self.config.keep == "best" else self.judged.state_dict())
        recalibrate_batch_norm(self.net, train_x)
        val = evaluate(self.net, valid_x, valid_y)
        self.net.train()
        h.kept_val_loss, h.kept_val_acc = val.loss, val.accuracy
        return h

    def state_dict(self) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": self.history.as_dict(), "best_state": self.best_state,
                "average": self.average.module.state_dict() if self.average is not None else None,
                "average_steps": self.average.steps if self.average is not None else 0, "epoch": self.epoch,
                "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history, self.best_state = History.from_dict(state["history"]), state["best_state"]
        if self.average is not None:
            self.average.module.load_state_dict(state["average"])
            self.average.steps = state["average_steps"]
        self.epoch, self.step = state["epoch"], state["step"]


class Callback:
    """What a training callback may define; ``train`` calls each hook with the :class:`Run`."""

    def on_epoch_start(self, run: Run) -> None: ...
    def on_step(self, run: Run) -> None: ...
    def on_epoch_end(self, run: Run) -> None: ...


class Trained(NamedTuple):
    """What :func:`train` returns: ``net, history = train(...)``."""
    net: nn.Module
    history: History


def train(net: nn.Module, train_set_x: torch.Tensor, train_set_y: torch.Tensor, valid_set_x: torch.Tensor,
          valid_set_y: torch.Tensor, learning_rate: float | None = None, training_epochs: int | None = None,
          loss_func: str | None = None, optimizer: str | None = None, config: Config = Config(),
          callbacks: tuple | list = (), resume: dict | None = None) -> Trained:
    """Train ``net``; return it, holding its last (``config.keep="last"``) or best epoch's weights, and its History.

    The assignment's arguments, when given, replace ``config``'s settings (``learning_rate`` is the one-cycle
    peak). ``callbacks`` get each hook with the :class:`Run` (their time is not training time); ``resume`` is a
    ``Run.state_dict()`` to continue from, to the figures an uninterrupted run reaches."""
    given = dict(learning_rate=learning_rate, epochs=training_epochs, loss=loss_func, optimizer=optimizer)
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if len(train_set_y) == 0 or len(valid_set_y) == 0:
        raise UserError("training needs a non-empty training and validation set: check the split sizes")
    torch.manual_seed(config.seed)
    steps = math.ceil(len(train_set_y) / config.batch_size)
    run = Run(net, config, train_set_y, steps)
    loader = batches(ImageSet(train_set_x, train_set_y), config, run.generator, run.device)
    if resume is not None:
        run.load_state_dict(resume)
    hooks = {name: [getattr(cb, name) for cb in callbacks if hasattr(cb, name)]
             for name in ("on_epoch_start", "on_step", "on_epoch_end")}
    for epoch in range(run.epoch + 1, config.epochs + 1):
        # train one epoch on augmented batches
        run.start_epoch(epoch)
        _call(run, hooks["on_epoch_start"])
        fetched = time.perf_counter()
        for images, labels in loader:
            xb = to_device(augment(images, run.generator, config), run.device)
            yb = labels.to(run.device)
            run.data_seconds += time.perf_counter() - fetched
            run.train_step(xb, yb)
            _call(run, hooks["on_step"])
            fetched = time.perf_counter()
        run.end_steps()
        # judge the kept weights (the average, when averaging) on the validation set
        run.end_epoch(run.validate(valid_set_x, valid_set_y, train_set_x))
        _call(run, hooks["on_epoch_end"])
    # keep the chosen epoch's weights, with batch-norm statistics of their own
    return Trained(net, run.finish(train_set_x, valid_set_x, valid_set_y))


def _call(run: Run, hooks: list) -> None:
    started = time.perf_counter()
    for hook in hooks:
        hook(run)
    run.callback_seconds += time.perf_counter() - started


class EpochLog(Callback):
    """Prints one line of losses and accuracies per epoch, and with ``progress`` a bar within the epoch."""

    def __init__(self, progress: bool = False):
        self.progress, self.bar = progress, None

    def on_epoch_start(self, run: Run) -> None:
        if self.progress:
            self.bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {run.epoch}/{run.config.epochs}", unit="batch",
                            leave=False, dynamic_ncols=True)

    def on_step(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.update()
            if run.step % 20 == 0:
                self.bar.set_postfix(loss=f"{run.loss_sum / run.seen:.4f}", acc=f"{run.correct / run.seen:.4f}")

    def on_epoch_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
        h = run.history
        tqdm.write(f"epoch {h.epoch[-1]:>3}/{run.config.epochs}  train loss {h.train_loss[-1]:.4f} acc "
                   f"{h.train_acc[-1]:.4f}  |  val loss {h.val_loss[-1]:.4f} acc {h.val_acc[-1]:.4f}  |  "
                   f"{h.seconds[-1]:.1f}s", file=sys.stdout)
