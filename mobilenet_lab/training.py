"""Training: ``train`` with the assignment's signature, the History it fills, and the callbacks it calls. Each epoch
takes one optimiser step per augmented batch of a DataLoader along a one-cycle learning-rate schedule; a moving
average of the weights (torch's AveragedModel) is what validation judges and what train returns."""
import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.optim.swa_utils import AveragedModel, update_bn

from .recipe import augment, make_loss, make_optimizer
from .config import Config
from .data import ImageSet, data_loader
from .errors import TrainingDiverged
from .evaluation import Evaluation, evaluate

MEMORY_FORMAT = torch.channels_last  # depthwise convolutions run faster in it on a CPU
CHECK_BN_IMAGES = 1024  # each epoch's validation measures batch-norm statistics on this many training images


def train(net: nn.Module, train_set_x, train_set_y, valid_set_x, valid_set_y, learning_rate: float,
          training_epochs: int, loss_func, optimizer, config: Config | None = None, history: "History | None" = None,
          callbacks=()) -> nn.Module:
    """Train ``net`` and return it, holding the moving average of its weights (its last weights when
    ``config.average_decay`` is 0) with batch-norm statistics measured on the training images.

    Args:
        train_set_x, train_set_y, valid_set_x, valid_set_y: images (uint8, or floats in [0, 1]) and their labels.
        learning_rate, training_epochs: the peak of the one-cycle schedule; passes over the training set.
        loss_func, optimizer: names (config.LOSSES, config.OPTIMIZERS), or a loss module and an optimiser of net's.
        config: the rest of the recipe: batch size, augmentation, weight average, seed (default: Config()).
        history: a History to fill epoch by epoch.
        callbacks: objects whose methods on_train_start, on_epoch_start, on_step, on_epoch_end (those they have) are
            called with the :class:`Run`, e.g. EpochLog."""
    run = Run(net, ImageSet(train_set_x, train_set_y), learning_rate, training_epochs, loss_func, optimizer,
              config or Config(), history if history is not None else History(), callbacks)
    run.hook("on_train_start")  # a callback may restore a saved state here, to resume
    for epoch in range(run.epoch + 1, training_epochs + 1):
        # train one epoch, a step per augmented batch
        run.start_epoch(epoch)
        for images, labels in run.batches():
            run.train_step(images, labels)
        # judge the averaged weights on the validation set
        run.end_epoch(run.validate(valid_set_x, valid_set_y))
    # keep the averaged weights, with batch-norm statistics measured on all the training images
    run.finish(valid_set_x, valid_set_y)
    return net


@dataclass
class History:
    """Per-epoch figures filled by train (the training ones are of the augmented batches)."""
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)       # the whole epoch, validation included
    step_seconds: list[float] = field(default_factory=list)  # its training steps
    data_seconds: list[float] = field(default_factory=list)  # of those, waiting for batches
    best_epoch: int = 0  # the best validation accuracy; the later epoch among equals
    final_val_loss: float | None = None  # the weights train returns
    final_val_acc: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def ema_with_warm_up(decay: float):
    """AveragedModel's update (as torch's get_ema_multi_avg_fn) with a warm-up: after n updates the average keeps
    min(decay, (1+n)/(10+n)) of itself, so the first steps' random weights fade fast."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)
        for mine, now in zip(averaged, current):
            mine.lerp_(now, 1 - min(decay, (1 + n) / (10 + n)))
    return update


@torch.no_grad()
def set_normalization(net: nn.Module, images: torch.Tensor) -> None:
    """Standardise the network's input with the per-channel mean and std of the training images."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    x = x.transpose(0, 1).reshape(x.shape[1], -1)
    net.input.mean.copy_(x.mean(1).view(1, -1, 1, 1))
    net.input.std.copy_(x.std(1).clamp(min=1e-3).view(1, -1, 1, 1))


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Measure the batch-norm statistics of ``net`` afresh on ``images`` (torch's update_bn): the running ones lag
    behind the weights, and averaged weights have none of their own."""
    device = next(net.parameters()).device
    update_bn((images[i:i + batch_size].to(device).contiguous(memory_format=MEMORY_FORMAT)
               for i in range(0, len(images), batch_size)), net)
    return net


class Run:
    """One training run's moving parts, for train and its callbacks: the network, loss, optimiser, schedule, averaged
    weights, the random generator of the batches and their augmentation, and the history."""

    def __init__(self, net: nn.Module, train_set: ImageSet, learning_rate: float, epochs: int, loss_func, optimizer,
                 config: Config, history: History, callbacks):
        self.net, self.train_set, self.config, self.history, self.callbacks = net, train_set, config, history, callbacks
        self.learning_rate, self.epochs, self.device = learning_rate, epochs, next(net.parameters()).device
        set_normalization(net, train_set.images)
        net.to(memory_format=MEMORY_FORMAT)
        self.loss_fn = (make_loss(loss_func, train_set.labels, net.fc.out_features).to(self.device)
                        if isinstance(loss_func, str) else loss_func)
        self.optimizer = (make_optimizer(optimizer, net.parameters(), learning_rate, config.weight_decay)
                          if isinstance(optimizer, str) else optimizer)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.loader = data_loader(train_set, config.batch_size, balanced=config.balance == "sampler",
                                  generator=self.generator)
        self.scheduler = OneCycleLR(self.optimizer, max_lr=learning_rate, epochs=epochs,
                                    steps_per_epoch=len(self.loader), pct_start=0.2)
        self.average = (AveragedModel(net, multi_avg_fn=ema_with_warm_up(config.average_decay))
                        if config.average_decay else None)
        self.judged = self.average.module if self.average is not None else net  # what validation judges
        self.epoch = self.step = 0

    def hook(self, name: str) -> None:
        for callback in self.callbacks:
            getattr(callback, name, lambda run: None)(self)

    def start_epoch(self, epoch: int) -> None:
        self.net.train()
        self.epoch, self.started = epoch, time.perf_counter()
        self.seen, self.loss_sum, self.correct, self.data_seconds = 0, 0.0, 0, 0.0
        self.hook("on_epoch_start")

    def batches(self):
        """The epoch's batches, augmented and on the device; the time spent waiting for each is data time."""
        fetched = time.perf_counter()
        for images, labels in self.loader:
            images = augment(images, self.generator, self.config).to(self.device)
            self.data_seconds += time.perf_counter() - fetched
            yield images.contiguous(memory_format=MEMORY_FORMAT), labels.to(self.device)
            fetched = time.perf_counter()
        self.step_seconds = time.perf_counter() - self.started

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One optimiser step (the forward pass in bfloat16 autocast with ``config.precision`` bf16)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            logits = self.net(images).float()
        loss = self.loss_fn(logits, labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} at epoch {self.epoch}, step {self.step + 1}: lower "
                                   f"the learning rate (--learning-rate {self.learning_rate:g} now); "
                                   f"nothing was saved")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update_parameters(self.net)
        self.step += 1
        self.seen += len(labels)
        self.loss_sum += loss.item() * len(labels)
        self.correct += int((logits.argmax(1) == labels).sum())
        self.hook("on_step")

    def validate(self, valid_x: torch.Tensor, valid_y: torch.Tensor) -> Evaluation:
        """A copy of the judged weights, batch-norm statistics measured on CHECK_BN_IMAGES training images, judged."""
        judge = copy.deepcopy(self.judged)
        images = self.train_set.images
        recalibrate_batch_norm(judge, images[::max(1, len(images) // CHECK_BN_IMAGES)][:CHECK_BN_IMAGES])
        return evaluate(judge, valid_x, valid_y)

    def end_epoch(self, val: Evaluation) -> None:
        h = self.history
        for name, value in (("epoch", self.epoch), ("train_loss", self.loss_sum / self.seen),
                            ("train_acc", self.correct / self.seen), ("val_loss", val.loss),
                            ("val_acc", val.accuracy), ("lr", self.optimizer.param_groups[0]["lr"]),
                            ("seconds", time.perf_counter() - self.started), ("step_seconds", self.step_seconds),
                            ("data_seconds", self.data_seconds)):
            getattr(h, name).append(value)
        # Ties go to the later epoch: on a few hundred images accuracy moves in steps of one image.
        if h.best_epoch == 0 or val.accuracy >= h.val_acc[h.best_epoch - 1]:
            h.best_epoch = self.epoch
        self.hook("on_epoch_end")

    def finish(self, valid_x: torch.Tensor, valid_y: torch.Tensor) -> None:
        """The judged weights into the network, batch-norm statistics measured on every training image, judged."""
        if self.average is not None:
            self.net.load_state_dict(self.average.module.state_dict())
        recalibrate_batch_norm(self.net, self.train_set.images)
        val = evaluate(self.net, valid_x, valid_y)
        self.history.final_val_loss, self.history.final_val_acc = val.loss, val.accuracy


class EpochLog:
    """Prints one line of losses and accuracies per epoch."""

    def on_epoch_end(self, run: Run) -> None:
        h = run.history
        print(f"epoch {h.epoch[-1]:>3}/{run.epochs}  train loss {h.train_loss[-1]:.4f} acc {h.train_acc[-1]:.4f}"
              f"  |  val loss {h.val_loss[-1]:.4f} acc {h.val_acc[-1]:.4f}  |  {h.seconds[-1]:.1f}s", flush=True)
