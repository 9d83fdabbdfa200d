"""Testing: ``test`` with the assignment's signature, and ``evaluate``, which gives the probabilities behind it."""
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load
from .model import MobileNetLab, fused_for_inference

BATCH = 128  # images per forward pass: the activations stay in the CPU's caches


def test(net: nn.Module, model=None, test_set_x=None, test_set_y=None, outputs: dict | None = None) -> torch.Tensor:
    """The predicted class of each image of ``test_set_x`` (a tensor of labels), by ``net``, or by ``model`` when
    given (a loaded network or a saved one's path). A dict ``outputs`` also gets the softmax probabilities ("probs")
    and, with ``test_set_y``, the mean loss ("loss") and the accuracy ("accuracy")."""
    if isinstance(model, (str, Path)):
        model = load(model)
    result = evaluate(model if model is not None else net, test_set_x, test_set_y)
    if outputs is not None:
        outputs.update(probs=result.probs, loss=result.loss, accuracy=result.accuracy)
    return result.probs.argmax(1)


@dataclass
class Evaluation:
    """Softmax probabilities (N, classes), and with true labels the mean cross-entropy loss and the accuracy."""
    probs: torch.Tensor
    loss: float | None = None
    accuracy: float | None = None


@contextmanager
def eval_mode(net: nn.Module):
    """``net`` in eval mode for the block, then back in the mode it was in."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@torch.inference_mode()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> Evaluation:
    """Run ``net`` over ``images`` in eval mode and float32, in batches of BATCH, leaving ``net`` as it was (our
    networks run as a copy with each batch norm folded into its convolution)."""
    images = torch.as_tensor(images)
    images = images.unsqueeze(1) if images.dim() == 3 else images  # (N, H, W): one channel
    device = next(net.parameters()).device
    with eval_mode(fused_for_inference(net) if isinstance(net, MobileNetLab) else net) as model:
        logits = torch.cat([model(images[i:i + BATCH].to(device).contiguous(memory_format=torch.channels_last))
                            .float().cpu() for i in range(0, len(images), BATCH)])
    if labels is None or len(labels) == 0:
        return Evaluation(torch.softmax(logits, 1))
    labels = torch.as_tensor(labels)
    return Evaluation(torch.softmax(logits, 1), float(nn.functional.cross_entropy(logits, labels)),
                      float((logits.argmax(1) == labels).float().mean()))
