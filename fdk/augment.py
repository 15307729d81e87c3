"""Batch augmentation on the device, differentiable, with no per-sample Python loop.

Used twice, as upstream does (docs/method.md §2.4, §4.2): inside synthesis (gradients flow back to the
generator through the crop and flip) and on KD batches drawn from the synthetic-image bank.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad by `padding` then crop back to (H, W) at a random offset per sample (RandomCrop(pad=4))."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p), zeros
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing gathers (B, H, W, C); move channels back to dim 1.
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
    return torch.where(flip, x.flip(3), x)


def random_hflip_batch(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """One coin for the whole batch: all images flipped or none (upstream DeepInversion's jitter_and_flip)."""
    return x.flip(3) if torch.rand(()) < p else x


def random_roll(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """DeepInversion's jitter: roll the whole batch by one random (dy, dx) in [-max_shift, max_shift]."""
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - channel_constant(mean, x)) / channel_constant(std, x)


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return x * channel_constant(std, x) + channel_constant(mean, x)


_CONSTANTS: dict = {}


def channel_constant(values, like: torch.Tensor) -> torch.Tensor:
    """Per-channel values as a (1, C, 1, 1) tensor on `like`'s device and dtype, made once per (values,
    device, dtype) and reused: making it from Python values is a host-to-device copy, which on a GPU waits
    for the device, and every KD, synthesis and training step normalises."""
    if isinstance(values, torch.Tensor):
        return values.to(like).view(1, -1, 1, 1)
    key = (tuple(values), like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return _CONSTANTS[key]


def crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The CIFAR train augmentation: RandomCrop(pad) then RandomHorizontalFlip, on [0, 1] images."""
    return random_hflip(random_crop(x, padding))


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) -> float in [0, 1], as ToTensor does."""
    return images_uint8.float().div_(255)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 by floor, exactly as upstream's PNG writer did (docs/method.md §4.2)."""
    return (x.detach().clamp(0, 1) * 255).to(torch.uint8)


def random_resized_crop_flip(
    x: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p_flip: float = 0.5, attempts: int = 10
) -> torch.Tensor:
    """RandomResizedCrop(size, scale, ratio) then RandomHorizontalFlip, per sample, in one bilinear resample.

    The ImageNet augmentation (docs/method.md §13): torchvision's box sampling (area fraction ~ U(scale),
    log aspect ratio ~ U(log ratio), the first of `attempts` draws that fits, else the whole image),
    drawn for the whole batch at once, then one `grid_sample` that crops, resizes and flips. Offsets are
    continuous rather than whole pixels, and there is no antialiasing (as kornia's, which upstream used
    during synthesis). Differentiable: gradients flow back to the generator.
    """
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, attempts, device=dev).uniform_(*scale)  # fraction of the image area
    log_r = torch.empty(b, attempts, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect)  # crop width as a fraction of the image width (square pixels assumed)
    ch = torch.sqrt(area / aspect) * (w / h)  # crop height as a fraction of the image height
    fits = (cw <= 1) & (ch <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((b,), -1, device=dev))
    pick = first.clamp(min=0)[:, None]
    cw = torch.where(first >= 0, cw.gather(1, pick)[:, 0], torch.ones(b, device=dev))  # fallback: whole image
    ch = torch.where(first >= 0, ch.gather(1, pick)[:, 0], torch.ones(b, device=dev))
    cx = (torch.rand(b, device=dev) * (1 - cw) + cw / 2) * 2 - 1  # crop centre in grid units [-1, 1]
    cy = (torch.rand(b, device=dev) * (1 - ch) + ch / 2) * 2 - 1
    flip = torch.where(torch.rand(b, device=dev) < p_flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = cw * flip, cx  # a flip mirrors the sampling grid about the crop centre
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


AUGMENTATIONS = ("crop_flip", "resized_crop", "none")


def make_augment(name: str, size: int, scale=(0.08, 1.0)):
    """The batch augmentation named in a config: crop_flip (CIFAR's RandomCrop(pad 4) + flip),
    resized_crop (ImageNet's RandomResizedCrop(size, scale) + flip) or none."""
    if name == "none":
        return _identity
    if name == "crop_flip":
        return crop_flip
    if name == "resized_crop":
        return partial(random_resized_crop_flip, size=size, scale=scale)
    raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
