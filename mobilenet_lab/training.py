"""Training and testing: ``train`` and ``test`` with the assignment's signatures.

Data stay in memory as uint8 tensors; each step indexes a batch, augments it on the tensor
(random affine with shear and, when asked, elastic distortion, per image) and feeds it to the network in channels_last layout, which is
about twice as fast as contiguous on CPU for depthwise convolutions. No DataLoader workers:
there is no per-item decoding left to parallelise.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .errors import UserError
from .malloc import keep_freed_memory
from .model import MobileNetLab, fused_for_inference
from .recipe import DEFAULTS, KEEP_CHOICES, OPTIMIZER_NAMES

# Channels-last runs the depthwise convolutions about twice as fast as contiguous on CPU
# (python -m mobilenet_lab.bench measures both).
MEMORY_FORMAT = torch.channels_last
LOSSES = ("ce", "weighted-ce", "balanced-softmax", "label-smoothing", "focal")
OPTIMIZERS = tuple(OPTIMIZER_NAMES)
WEIGHT_DECAY = 5e-4  # make_optimizer's, for AdamW and SGD alike
BALANCING = ("none", "weighted-loss", "sampler")
MAX_ELASTIC = 4.0  # pixels; beyond this a 28x28 digit stops looking like its class
MAX_SHEAR = 45.0   # degrees; beyond this strokes lie nearly flat
# Each augmentation setting: (largest value, its allowed range in words, an example, what 0 does).
# train() and every command-line tool check them with check_augmentation, so limits and messages live here.
AUGMENTATION_LIMITS = {
    "elastic": (MAX_ELASTIC, f"between 0 and {MAX_ELASTIC:g} pixels", "1.5", "keeps the augmentation affine"),
    "shear": (MAX_SHEAR, f"between 0 and {MAX_SHEAR:g} degrees", "15", "slants nothing"),
    "erase": (1.0, "a share of the training images between 0 and 1", "0.5", "erases nothing"),
    # random_distort's own ranges (train() keeps its defaults; the seeds study can change them)
    "degrees": (90.0, "between 0 and 90 degrees", "10", "rotates nothing"),
    "translate": (0.5, "a share of the image side between 0 and 0.5", "0.1", "shifts nothing"),
    "scale": (0.5, "a share of the size between 0 and 0.5", "0.1", "keeps the size"),
}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def check_augmentation(flags: bool = False, **settings: float) -> None:
    """Raise :class:`UserError` for the first augmentation setting (``elastic``, ``shear``,
    ``erase``, ``degrees``, ``translate``, ``scale``) outside its range; NaN is outside every range.

    Args:
        flags: name the setting as its command-line flag (``--shear``) rather than as the
            argument of :func:`train` (``shear``).
        settings: the values to check, by name, e.g. ``shear=15.0``.
    """
    for name, value in settings.items():
        high, allowed, example, zero = AUGMENTATION_LIMITS[name]
        if not 0 <= value <= high:
            raise UserError(f"{'--' if flags else ''}{name} {value:g} must be {allowed}, e.g. {example} "
                            f"(0 {zero})")


# ---------------------------------------------------------------------------------------------
# Losses and optimisers by name.
# ---------------------------------------------------------------------------------------------
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)
        ce = F.nll_loss(logp, target, weight=self.weight, reduction="none")
        p_true = logp.gather(1, target[:, None]).squeeze(1).exp()
        return ((1 - p_true) ** self.gamma * ce).mean()


class BalancedSoftmaxLoss(nn.Module):
    """Balanced softmax (Ren et al. 2020): cross-entropy on logits shifted by the log class
    prior of the training set. The network then learns class-balanced scores, which suits a
    test set that is balanced while the training set is not; predictions use the raw logits."""

    def __init__(self, class_counts: torch.Tensor):
        super().__init__()
        self.register_buffer("log_prior", torch.log(class_counts.float().clamp(min=1) / class_counts.sum()))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.log_prior, target)


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, scaled so that their mean over the samples is 1."""
    counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
    weights = len(y) / (num_classes * counts)
    return weights / (weights[y].mean())


def make_loss(name: str, train_y: torch.Tensor, num_classes: int, balance: str = "none") -> nn.Module:
    """A loss by name. ``weighted-ce`` (or ``balance='weighted-loss'``) weights classes by
    inverse frequency."""
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}': choose one of {', '.join(LOSSES)}")
    weight = class_weights(train_y, num_classes) if (name == "weighted-ce" or balance == "weighted-loss") else None
    if name == "focal":
        return FocalLoss(weight=weight)
    if name == "balanced-softmax":
        return BalancedSoftmaxLoss(torch.bincount(train_y, minlength=num_classes))
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1 if name == "label-smoothing" else 0.0)


def make_optimizer(name: str, params, learning_rate: float, weight_decay: float = WEIGHT_DECAY) -> torch.optim.Optimizer:
    if learning_rate <= 0 or not math.isfinite(learning_rate):
        raise UserError(f"learning rate {learning_rate} must be a positive number, e.g. 0.003")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")


# ---------------------------------------------------------------------------------------------
# Batched augmentation on tensors.
# ---------------------------------------------------------------------------------------------
ELASTIC_GRID = 5  # the elastic field's random offsets sit on this many x this many points (7 px apart)


def random_distort(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0,
                   translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1), elastic: float = 0.0,
                   shear: float = 0.0) -> torch.Tensor:
    """Rotate, shift and scale each image of a float batch (N, C, H, W) by its own random amount,
    with ``shear`` > 0 also slant it by up to that many degrees (horizontal lines stay
    horizontal, as in slanted handwriting), and with ``elastic`` > 0 also bend it (Simard et
    al. 2003, "elastic distortions").

    The elastic field is smooth: uniform random offsets of up to ``elastic`` pixels on an
    ``ELASTIC_GRID`` x ``ELASTIC_GRID`` lattice, upsampled bicubically to the image and added to
    the affine map, so one ``grid_sample`` does both. Strokes bend and thicken locally as
    handwriting does, which the rare classes of the imbalanced set have too few images to show.
    With ``shear`` and ``elastic`` 0 the random draws are those of the affine alone, and the
    map is the same to the bit, so older runs repeat.
    Pixels that come from outside the image are 0 (MNIST's black background).
    """
    n, _, height, width = x.shape
    rand = torch.rand(n, 4, generator=generator)
    angle = (rand[:, 0] * 2 - 1) * math.radians(degrees)
    factor = scale[0] + rand[:, 1] * (scale[1] - scale[0])
    shift = (rand[:, 2:] * 2 - 1) * translate * 2  # affine_grid coordinates span 2 per image side
    slant = torch.zeros(n)
    if shear > 0:  # drawn only when asked, so that runs without it repeat
        slant = torch.tan((torch.rand(n, generator=generator) * 2 - 1) * math.radians(shear))
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    # rotation-and-scale times the shear [[1, slant], [0, 1]]; slant 0 gives the rotation exactly
    theta = torch.stack([torch.stack([cos, cos * slant - sin, shift[:, 0]], 1),
                         torch.stack([sin, sin * slant + cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if elastic > 0:
        offsets = torch.rand(n, 2, ELASTIC_GRID, ELASTIC_GRID, generator=generator) * 2 - 1
        field = F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True)
        pixel = torch.tensor([2 / width, 2 / height])  # one pixel in affine_grid coordinates (x, y)
        grid = grid + field.permute(0, 2, 3, 1).to(x.dtype) * (elastic * pixel).to(x.dtype)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


ERASE_AREA = (0.02, 0.10)   # share of the image a random erasing box covers
ERASE_ASPECT = (0.3, 3.3)   # its height / width, drawn log-uniformly


def random_erase(x: torch.Tensor, generator: torch.Generator, probability: float) -> torch.Tensor:
    """Blank one random box in each image of a float batch (N, C, H, W) with ``probability``
    (random erasing, Zhong et al. 2020): a box of ``ERASE_AREA`` of the image, aspect ratio in
    ``ERASE_ASPECT``, set to 0 (MNIST's background), so that no single stroke is relied on.
    Every image draws its box whether or not it is erased, so the draws do not depend on
    ``probability``. torchvision's RandomErasing draws one box for a whole batch tensor.
    """
    n, _, height, width = x.shape
    rand = torch.rand(n, 5, generator=generator)
    area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * rand[:, 0]) * height * width
    log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(log_low + rand[:, 1] * (log_high - log_low))
    box_h = (area * aspect).sqrt().round().clamp(1, height)
    box_w = (area / aspect).sqrt().round().clamp(1, width)
    top, left = (rand[:, 2] * (height - box_h + 1)).floor(), (rand[:, 3] * (width - box_w + 1)).floor()
    rows, cols = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
              & (rand[:, 4] < probability).view(-1, 1, 1))
    return x.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)


# ---------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """What :func:`test` returns: predicted labels, class probabilities, and (when the true
    labels were given) the mean cross-entropy loss and the accuracy over all samples."""
    labels: torch.Tensor
    probs: torch.Tensor
    loss: float | None = None
    accuracy: float | None = None


def _batches_to(x: torch.Tensor, device: torch.device, memory_format=MEMORY_FORMAT) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


@torch.inference_mode()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 128,
            loss_fn: nn.Module | None = None, fuse: bool = True) -> Predictions:
    """Run ``net`` over ``x`` in eval mode; loss (cross-entropy unless ``loss_fn``) is over samples.

    Batches of 128 keep the activations in the CPU's caches: on 2 cores the saved mobilenet
    model runs the 10,000 test images at about 2,400 images/s this way, 1,000 with batches of 1,000.
    A MobileNetLab network runs as a copy with its batch norms folded into the convolutions
    (``fused_for_inference``) unless ``fuse`` is off; ``net`` itself is only switched to eval mode.
    """
    keep_freed_memory()
    net.eval()
    if fuse and isinstance(net, MobileNetLab):
        net = fused_for_inference(net)
    device = next(net.parameters()).device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    # One output tensor, allocated once: a small tensor kept from every batch would pin the
    # freed activation buffers apart in malloc's heap, which then grows by about 55 MB every
    # few batches (conv4's peak memory went from 1.0 to 2.5 GB over the final evaluations).
    probs_all, total_loss = torch.empty(0, 0), 0.0
    for start in range(0, len(x), batch_size):
        logits = net(_batches_to(x[start:start + batch_size], device)).float()
        if y is not None:
            total_loss += float(loss_fn(logits, y[start:start + batch_size].to(device))) * len(logits)
        if start == 0:
            probs_all = torch.empty(len(x), logits.shape[1])
        probs_all[start:start + len(logits)] = torch.softmax(logits, 1)
    labels = probs_all.argmax(1) if len(probs_all) else torch.empty(0, dtype=torch.int64)
    if y is None or len(y) == 0:
        return Predictions(labels, probs_all)
    return Predictions(labels, probs_all, total_loss / len(y), float((labels == y).float().mean()))


def test(net: nn.Module, model=None, test_set_x: torch.Tensor | None = None,
         test_set_y: torch.Tensor | None = None) -> Predictions:
    """Predict the classes of ``test_set_x`` with a trained network.

    Args:
        net: the network (as built by ``init_network`` or returned by ``train``/``load``).
        model: the trained weights to use: None to use ``net`` as it is, a checkpoint path
            written by ``save``, a state dict, or a trained network of the same architecture.
        test_set_x: images, uint8 (N, C, H, W) or floats in [0, 1].
        test_set_y: true labels (N,), or None; used only for the loss and accuracy.

    Returns:
        Predictions: ``.labels`` (N,) predicted classes, ``.probs`` (N, K) softmax
        probabilities, and ``.loss`` / ``.accuracy`` when ``test_set_y`` is given.
    """
    if model is not None:
        from .checkpoint import load_weights_into
        load_weights_into(net, model)
    if test_set_x is None:
        raise UserError("test() needs test_set_x, the images to classify")
    return evaluate(net, test_set_x, test_set_y)


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------
def make_batch(x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator, augment: bool,
               device: torch.device, memory_format=MEMORY_FORMAT, elastic: float = 0.0,
               erase: float = 0.0, shear: float = 0.0) -> torch.Tensor:
    """The float batch ``x[idx]`` in [0, 1], augmented when asked (``elastic``, ``shear``: see
    :func:`random_distort`; ``erase``: :func:`random_erase`), on ``device`` in ``memory_format``."""
    xb = x[idx].float().div_(255.0)
    if augment:
        xb = random_distort(xb, generator, elastic=elastic, shear=shear)
        if erase > 0:  # with 0 no draws, so runs without erasing repeat
            xb = random_erase(xb, generator, erase)
    return _batches_to(xb, device, memory_format)


def train_step(net: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, xb: torch.Tensor,
               yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step; returns (loss, logits). The loss is checked before the update."""
    logits = net(xb)
    loss = loss_fn(logits, yb)
    if math.isfinite(loss.item()):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss, logits


def warm_up_share(steps: int, decay: float) -> float:
    """The share of the current weights in a weight average's ``steps``-th update (from 1):
    1 - min(decay, (1 + n) / (10 + n)), so the decay starts low and rises towards ``decay``."""
    return 1.0 - min(decay, (1 + steps) / (10 + steps))


@torch.no_grad()
def blend_into(average: Iterable[torch.Tensor], current: Iterable[torch.Tensor], share: float) -> None:
    """Move every floating-point tensor of ``average`` ``share`` of the way to its partner in
    ``current``; copy the others (counters such as num_batches_tracked)."""
    for avg, now in zip(average, current):
        if avg.is_floating_point():
            avg.lerp_(now, share)
        else:
            avg.copy_(now)


class WeightAverage:
    """An exponential moving average of a network's weights and batch-norm statistics.

    The averaged copy moves a small step towards the trained network after every optimiser
    step. It smooths out the noise of single steps, so it scores well earlier in training
    (Polyak averaging; "EMA" in timm); at the end of a one-cycle run, once its batch-norm
    statistics are re-measured, it scores about as the trained weights do (Readme.txt, the
    seeds table of "Saved models"). The decay starts low
    and rises towards ``decay``, (1 + n) / (10 + n) after n steps, so early weights fade quickly;
    it reaches 0.999 only after 8,990 steps (a 20-epoch recipe run has 3,840 and ends at 0.9977).

    Args:
        net: the network being trained (the average starts as a copy of it).
        decay: the largest share of the old average kept at each step, e.g. 0.999.
    """

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise UserError(f"weight-average decay {decay} must be between 0 and 1, e.g. 0.999")
        self.module, self.decay, self.steps = copy.deepcopy(net), decay, 0
        self._average, self._current = list(self.module.state_dict().values()), list(net.state_dict().values())

    def update(self) -> None:
        self.steps += 1
        blend_into(self._average, self._current, warm_up_share(self.steps, self.decay))


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Measure the batch-norm statistics of ``net``'s weights afresh on the images ``x`` (no
    augmentation): one pass in train mode, every batch weighted alike (``update_bn`` of
    ``torch.optim.swa_utils``). Returns ``net``, changed in place.

    A weight average also averages the running statistics of the networks it passed through,
    which are not the statistics of the averaged network itself, and they were gathered on
    augmented batches, not on images like the test set's. Of eleven trained models (Readme.txt,
    "Saved models") ten scored 0 to 11 more test images right in 10,000 with re-measured
    statistics, one 4 fewer.
    """
    device = next(net.parameters()).device
    batches = (_batches_to(x[start:start + batch_size], device) for start in range(0, len(x), batch_size))
    torch.optim.swa_utils.update_bn(batches, net)
    return net


def _batch_order(y: torch.Tensor, balance: str, generator: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or class-balanced draws with replacement."""
    if balance == "sampler":
        weights = 1.0 / torch.bincount(y).float()[y]
        return torch.multinomial(weights, len(y), replacement=True, generator=generator)
    return torch.randperm(len(y), generator=generator)


def mid_epoch_check_steps(steps_per_epoch: int, checks_per_epoch: int) -> set[int]:
    """The step counts (1-based) after which an epoch's checks before its end run, evenly spaced."""
    return {round(k * steps_per_epoch / checks_per_epoch) for k in range(1, checks_per_epoch)} - {0}


def train(net: nn.Module, train_set_x: torch.Tensor, train_set_y: torch.Tensor,
          valid_set_x: torch.Tensor, valid_set_y: torch.Tensor, learning_rate: float = 3e-3,
          training_epochs: int = 10, loss_func: str | nn.Module = "ce",
          optimizer: str | torch.optim.Optimizer = "adamw", *, batch_size: int = 128,
          balance: str = "none", augment: bool = True, seed: int = 0, average_decay: float | None = None,
          elastic: float = 0.0, erase: float = 0.0, shear: float = 0.0, checks_per_epoch: int = 1,
          progress: bool = True,
          log_epochs: bool = True,
          keep: str = DEFAULTS["keep"], start_state: dict | None = None,
          on_epoch_end: Callable[[nn.Module, dict], None] | None = None,
          on_step: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Train ``net`` and return it holding the weights of its last epoch (``keep="last"``) or of
    its best validation epoch (``keep="best"``: the highest validation accuracy, and among equal
    accuracies the latest epoch).

    Records per-epoch training and validation loss and accuracy in ``net.history`` (a dict
    of lists, plus ``best_epoch``), with wall seconds per epoch (``seconds``, validation
    included), of its training steps (``step_seconds``) and of those spent making batches
    (``data_seconds``). Losses are means over samples; training figures are
    measured on the augmented batches as they are trained on.

    Args:
        net: the network from ``init_network``.
        train_set_x, train_set_y: training images (uint8, N x C x H x W) and labels.
        valid_set_x, valid_set_y: validation images and labels (judged after every epoch; with
            ``keep="best"`` they pick the epoch whose weights are returned).
        learning_rate: peak learning rate of the one-cycle schedule.
        training_epochs: passes over the training set.
        loss_func: a loss name (ce, weighted-ce, balanced-softmax, label-smoothing, focal) or a loss module.
        optimizer: an optimizer name (adamw, adam, sgd) or a ready torch optimizer (then no schedule).
        batch_size: images per step.
        balance: class-imbalance handling: none, weighted-loss or sampler.
        augment: random rotation/shift/scale of each training image.
        elastic: with ``augment``, also bend each training image by a smooth random field of
            up to this many pixels (see :func:`random_distort`); 0: affine only.
        erase: with ``augment``, blank a random box in this share of the training images
            (see :func:`random_erase`); 0: none.
        shear: with ``augment``, also slant each training image by a random angle of up to this
            many degrees (see :func:`random_distort`); 0: none.
        seed: seeds weight order, batches and augmentation.
        average_decay: keep an exponential moving average of the weights with this decay
            (e.g. 0.999; see :class:`WeightAverage`); validation, the best epoch and the
            returned weights then come from the average, and after training their batch-norm
            statistics are measured afresh on the training images (:func:`recalibrate_batch_norm`;
            ``history["kept_val_loss"]`` and ``["kept_val_acc"]`` judge them). None or 0: plain weights.
        checks_per_epoch: judge the validation set this many times per epoch, evenly spaced, the
            last at the epoch's end. Every check goes to ``history["checks"]`` (epoch reached,
            seconds of training and checks so far, accuracy) for time-to-accuracy measurements;
            only the epoch's end picks the best epoch. Checks count in ``seconds``, not in
            ``step_seconds``.
        progress: show a progress bar (on stderr).
        log_epochs: print one line of losses and accuracies per epoch (on stdout).
        keep: "last" returns the last epoch's weights (with the weight average and the one-cycle
            schedule the intended result; on a few hundred validation images the best epoch is
            mostly noise), "best" those of the best validation epoch. ``history["kept_epoch"]``
            says which epoch it was; ``history["best_epoch"]`` is the best validation epoch either way.
        start_state: resume from this training state (see ``on_epoch_end``); the run then
            continues to the same result an uninterrupted run reaches.
        on_epoch_end: called after each epoch with (network, state): the network validation
            judged (the weight average when averaging) and the weights, optimizer, scheduler,
            RNG states, history and best weights needed to resume.
        on_step: called with the trained network after each optimiser step (and the average's
            update), for studies that follow the run step by step (mobilenet_lab.seeds); it
            must not change the network.
    """
    if training_epochs < 1:
        raise UserError(f"training epochs {training_epochs} must be at least 1")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} must be at least 1")
    check_augmentation(elastic=elastic, shear=shear, erase=erase)
    if keep not in KEEP_CHOICES:
        raise UserError(f"keep '{keep}' is not known: choose last (the last epoch's weights) or best "
                        f"(the best validation epoch's)")
    if checks_per_epoch < 1:
        raise UserError(f"checks per epoch {checks_per_epoch} must be at least 1")
    if balance not in BALANCING:
        raise UserError(f"unknown imbalance handling '{balance}': choose one of {', '.join(BALANCING)}")
    if len(train_set_y) == 0 or len(valid_set_y) == 0:
        raise UserError("training needs a non-empty training and validation set: check the split sizes")
    keep_freed_memory()
    device = next(net.parameters()).device
    num_classes = net.fc.out_features
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = (make_loss(loss_func, train_set_y, num_classes, balance) if isinstance(loss_func, str)
               else loss_func).to(device)
    steps_per_epoch = math.ceil(len(train_set_y) / batch_size)
    if isinstance(optimizer, str):
        opt = make_optimizer(optimizer, net.parameters(), learning_rate)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, epochs=training_epochs,
                                                        steps_per_epoch=steps_per_epoch, pct_start=0.2)
    else:
        opt, scheduler = optimizer, None
    net.to(memory_format=MEMORY_FORMAT)
    average = WeightAverage(net, average_decay) if average_decay else None
    judged = average.module if average is not None else net  # the weights validation sees
    history = {"epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [],
               "lr": [], "seconds": [], "step_seconds": [], "data_seconds": [], "checks": [], "best_epoch": 0}
    best_state, best_key, first_epoch = None, None, 1
    if start_state is not None:
        net.load_state_dict(start_state["model"])
        opt.load_state_dict(start_state["optimizer"])
        if scheduler is not None and start_state.get("scheduler"):
            scheduler.load_state_dict(start_state["scheduler"])
        generator.set_state(start_state["generator"])
        torch.set_rng_state(start_state["torch_rng"])
        history = copy.deepcopy(start_state["history"])
        for key in ("step_seconds", "data_seconds", "checks"):  # absent from checkpoints of older versions
            history.setdefault(key, [])
        best_state = start_state["best_state"]
        if average is not None:
            judged.load_state_dict(start_state["average"])
            average.steps = start_state["average_steps"]
        best_key = history["val_acc"][history["best_epoch"] - 1]
        first_epoch = len(history["epoch"]) + 1

    check_steps = mid_epoch_check_steps(steps_per_epoch, checks_per_epoch)
    for epoch in range(first_epoch, training_epochs + 1):
        net.train()
        started = time.perf_counter()
        earlier_seconds = sum(history["seconds"])
        order = _batch_order(train_set_y, balance, generator)
        seen, loss_sum, correct, data_seconds, check_seconds = 0, 0.0, 0, 0.0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{training_epochs}", unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for step in bar:
            fetched = time.perf_counter()
            idx = order[step * batch_size:(step + 1) * batch_size]
            xb = make_batch(train_set_x, idx, generator, augment, device, elastic=elastic, erase=erase,
                            shear=shear)
            yb = train_set_y[idx].to(device)
            data_seconds += time.perf_counter() - fetched  # the step waits for its data this long
            loss, logits = train_step(net, opt, loss_fn, xb, yb)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch}, step {step + 1}: "
                                       f"lower the learning rate (--lr {learning_rate:g} now); nothing was saved")
            if average is not None:
                average.update()
            if scheduler is not None:
                scheduler.step()
            if on_step is not None:
                on_step(net)
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            if step + 1 in check_steps:
                checked = time.perf_counter()
                accuracy = evaluate(judged, valid_set_x, valid_set_y).accuracy
                net.train()  # evaluate() left it in eval mode when it is the judged network
                history["checks"].append({"epoch": epoch - 1 + (step + 1) / steps_per_epoch, "accuracy": accuracy,
                                          "seconds": earlier_seconds + time.perf_counter() - started})
                check_seconds += time.perf_counter() - checked
        bar.close()
        step_seconds = time.perf_counter() - started - check_seconds
        val = evaluate(judged, valid_set_x, valid_set_y)
        seconds = time.perf_counter() - started
        history["checks"].append({"epoch": epoch, "accuracy": val.accuracy, "seconds": earlier_seconds + seconds})
        history["epoch"].append(epoch)
        history["train_loss"].append(loss_sum / seen)
        history["train_acc"].append(correct / seen)
        history["val_loss"].append(val.loss)
        history["val_acc"].append(val.accuracy)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["seconds"].append(seconds)
        history["step_seconds"].append(step_seconds)
        history["data_seconds"].append(data_seconds)
        # Ties go to the later epoch: on a few hundred validation images accuracy moves in steps
        # of one image, and a later epoch at the same accuracy is further down the schedule. (The
        # validation loss broke ties before; on 501 images it picked epoch 7 of 20 for seed 1.)
        if best_key is None or val.accuracy >= best_key:
            best_key, history["best_epoch"] = val.accuracy, epoch
            best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
        if log_epochs:
            tqdm.write(f"epoch {epoch:>3}/{training_epochs}  train loss {loss_sum / seen:.4f} acc {correct / seen:.4f}"
                       f"  |  val loss {val.loss:.4f} acc {val.accuracy:.4f}  |  {history['seconds'][-1]:.1f}s",
                       file=sys.stdout)
        if on_epoch_end is not None:
            on_epoch_end(judged, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": scheduler.state_dict() if scheduler is not None else None,
                               "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                               "history": copy.deepcopy(history), "best_state": best_state,
                               "average": judged.state_dict() if average is not None else None,
                               "average_steps": average.steps if average is not None else 0,
                               "epoch": epoch, "epochs": training_epochs})
    if keep == "best":
        net.load_state_dict(best_state)
    elif average is not None:
        net.load_state_dict(judged.state_dict())
    history["kept_epoch"] = history["best_epoch"] if keep == "best" else len(history["epoch"])
    if average is not None:  # the averaged weights get statistics of their own (see recalibrate_batch_norm)
        started = time.perf_counter()
        recalibrate_batch_norm(net, train_set_x)
        val = evaluate(net, valid_set_x, valid_set_y)
        net.train()  # as without averaging: evaluate() left it in eval mode
        history.update(recalibrated=True, kept_val_loss=val.loss, kept_val_acc=val.accuracy,
                       recalibrate_seconds=time.perf_counter() - started)
    net.history = history
    return net
