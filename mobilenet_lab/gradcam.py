"""Grad-CAM (Selvaraju et al. 2017): where in the image the network looked for a class.

A short hook-based implementation rather than the ``grad-cam`` package: that package pulls in OpenCV and several other
dependencies for what is about twenty lines of autograd here.

For a chosen layer with activations A (channels k, map u x v) and a class score y_c, the map is ReLU(sum_k w_k A_k) with
w_k the spatial mean of dy_c/dA_k, upsampled bilinearly to the input size and scaled to [0, 1] per image."""
import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(net: nn.Module, images: torch.Tensor, target_classes: torch.Tensor | None = None,
             layer: nn.Module | None = None, *, batch_size: int = 256) -> torch.Tensor:
    """Grad-CAM heatmaps of ``images`` for ``target_classes``.

    ``images`` are uint8 (N, C, H, W) or floats in [0, 1]; ``target_classes`` None explains the predicted
    class; ``layer`` defaults to the last block (the last map before global average pooling). Returns
    (N, H, W) maps on the CPU, each scaled to [0, 1]. The network runs in eval mode and is left in the
    mode it was in; no parameter gradients are written (``torch.autograd.grad`` w.r.t. the activations)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs gradients: call it outside torch.inference_mode()")
    layer = layer if layer is not None else net.blocks[-1]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    maps = []
    try:
        # enable_grad: callers often sit inside no_grad (inference_mode cannot be undone, though)
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device)
                # new tensors (never the caller's, which may come from inference mode); requires_grad
                # so that the activations need grad even if the weights are frozen
                x = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float().clone()
                x.requires_grad_(True)
                captured.clear()
                logits = net(x)
                if target_classes is None:
                    targets = logits.argmax(1)
                else:
                    targets = torch.as_tensor(target_classes[start:start + batch_size]).to(device).long().clone()
                score = logits.gather(1, targets[:, None]).sum()
                activations = captured[-1]
                grads, = torch.autograd.grad(score, activations)
                weights = grads.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * activations).sum(1, keepdim=True)).detach()
                cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
                maps.append((cam / peak).clamp(0, 1).cpu())
    finally:
        handle.remove()
        net.train(was_training)
    if not maps:
        return torch.empty((0, *images.shape[-2:]))
    return torch.cat(maps)
