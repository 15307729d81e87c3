"""Batch augmentation on the device, differentiable, with no per-sample Python loop.

Used twice, as upstream does (docs/method.md §2.4, §4.2): inside synthesis (gradients flow back to the
generator through the crop and flip) and on KD batches drawn from the synthetic-image bank.
"""

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
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * std + mean


def crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The CIFAR train augmentation: RandomCrop(pad) then RandomHorizontalFlip, on [0, 1] images."""
    return random_hflip(random_crop(x, padding))


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) -> float in [0, 1], as ToTensor does."""
    return images_uint8.float().div_(255)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 by floor, exactly as upstream's PNG writer did (docs/method.md §4.2)."""
    return (x.detach().clamp(0, 1) * 255).to(torch.uint8)
