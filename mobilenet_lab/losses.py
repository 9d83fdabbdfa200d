"""The loss functions by name (``--loss``) and the optimisers (``--optimizer``)."""
import torch
import torch.nn.functional as F
from torch import nn

from .config import Config


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)
        ce = F.nll_loss(logp, target, reduction="none")
        p_true = logp.gather(1, target[:, None]).squeeze(1).exp()
        return ((1 - p_true) ** self.gamma * ce).mean()


class BalancedSoftmaxLoss(nn.Module):
    """Balanced softmax (Ren et al. 2020): cross-entropy on logits shifted by the log class prior of the training set.
    The network then learns class-balanced scores, which suits a balanced test set while the training set is not;
    predictions use the raw logits."""

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


def make_loss(config: Config, train_y: torch.Tensor, num_classes: int) -> nn.Module:
    """``config.loss`` for these training labels; ``weighted-ce`` weights the classes by inverse frequency."""
    if config.loss == "focal":
        return FocalLoss()
    if config.loss == "balanced-softmax":
        return BalancedSoftmaxLoss(torch.bincount(train_y, minlength=num_classes))
    weight = class_weights(train_y, num_classes) if config.loss == "weighted-ce" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1 if config.loss == "label-smoothing" else 0.0)


def make_optimizer(config: Config, params) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.9, nesterov=True,
                           weight_decay=config.weight_decay)
