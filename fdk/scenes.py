"""CIFAR scenes: fdk's own small segmentation task made of real pixels (docs/method.md §12).

A scene is a canvas whose background is a heavily blurred, upscaled crop of one CIFAR-10 image, with 2..4
other CIFAR-10 images pasted on it at random sizes and positions (later ones on top), each cut by its own
irregular outline (a superellipse with a wobbling radius), so the labels are blobs, not squares. Object
pixels are the source image's pixels (nearest-neighbour resampling), labelled 1 + CIFAR class; the
background is label 0. Every scene follows from the seed alone: all random draws are made up front and the
scenes composed on the CPU, so neither the device nor the chunking changes a pixel.
"""

import math

import torch
import torch.nn.functional as F

from fdk.data import ImageTensors, SegTensors, load_split
from fdk.inputs import dataset_spec
from fdk.utils import FdkError

SCENE_CLASSES = ("background", *dataset_spec("cifar10").classes)
SCENE_COUNTS = {"train": 10000, "test": 2000}
SCENE_SEEDS = {"train": 0, "test": 1}  # different scenes per split, on top of different source images
HARMONICS = (2, 3, 5)  # frequencies of the outline's wobble
BACKGROUND_CROP = 12  # a 12 px crop of a source image, averaged down to 6 px, is the background
CHUNK = 500  # scenes composed at once (bounds memory, not the result)


def _draw(count: int, n: int, size: int, objects, scale, generator: torch.Generator) -> dict:
    """Every random choice of `count` scenes, drawn in a fixed order."""
    k = objects[1]

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float32)

    draws = {
        "count": torch.randint(objects[0], objects[1] + 1, (count,), generator=generator),
        "pick": torch.randint(0, n, (count, k), generator=generator),
        "side": uniform(scale[0], scale[1], count, k) * size,
        "aspect": torch.exp(uniform(-0.25, 0.25, count, k)),  # height / width, up to ~1.3 either way
        "power": uniform(1.5, 4.0, count, k),  # superellipse exponent: < 2 pointed, 2 ellipse, > 2 squarish
        "amp": uniform(0.0, 0.12, count, k, len(HARMONICS)),
        "phase": uniform(0.0, 2 * math.pi, count, k, len(HARMONICS)),
        "flip": torch.rand(count, k, generator=generator) < 0.5,
        "place": torch.rand(count, k, 2, generator=generator, dtype=torch.float32),
        "background": torch.randint(0, n, (count,), generator=generator),
        "bg_offset": torch.rand(count, 2, generator=generator, dtype=torch.float32),
    }
    height = (draws["side"] * draws["aspect"].sqrt()).clamp(max=size)
    width = (draws["side"] / draws["aspect"].sqrt()).clamp(max=size)
    draws["box"] = torch.stack(  # top, left, height, width in canvas pixels; the box lies inside the canvas
        [draws["place"][..., 0] * (size - height), draws["place"][..., 1] * (size - width), height, width], -1
    )
    return draws


def _gather(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """images (B, C, h, w) read at integer rows/cols broadcastable to (B, H, W) -> (B, C, H, W)."""
    batch = torch.arange(images.shape[0]).view(-1, 1, 1)
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _background(src: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """A smooth real-pixel texture: a crop of each image, averaged down, then upscaled bicubically."""
    b, _, h, w = src.shape
    c = min(BACKGROUND_CROP, h, w)
    top = (offsets[:, 0] * (h - c + 1)).long().clamp(max=h - c).view(b, 1, 1)
    left = (offsets[:, 1] * (w - c + 1)).long().clamp(max=w - c).view(b, 1, 1)
    span = torch.arange(c)
    crop = _gather(src, top + span.view(1, c, 1), left + span.view(1, 1, c)).float()
    small = F.interpolate(crop, size=(max(1, c // 2),) * 2, mode="area")
    smooth = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return smooth.clamp(0, 255).round().to(torch.uint8)


def _outline(h: int, w: int, power, amp, phase) -> torch.Tensor:
    """Each object's shape on its source image's h x w grid (B, h, w) bool: a superellipse whose radius
    wobbles with the angle, scaled to stay inside the image. power (B,), amp and phase (B, M). Drawn on the
    source grid, the shape is resampled with the pixels, so its edge is exactly as sharp as theirs."""
    q = ((torch.arange(h) + 0.5) * (2 / h) - 1).view(1, h, 1)
    p = ((torch.arange(w) + 0.5) * (2 / w) - 1).view(1, 1, w)
    n = power.view(-1, 1, 1)
    r = (p.abs() ** n + q.abs() ** n) ** (1 / n)
    rho = torch.sqrt(p * p + q * q).clamp(min=1e-6)
    c1, s1 = p / rho, q / rho  # cos and sin of the angle; harmonics by angle addition
    c, s, turns = c1, s1, {1: (c1, s1)}
    for freq in range(2, max(HARMONICS) + 1):
        c, s = c * c1 - s * s1, s * c1 + c * s1
        turns[freq] = (c, s)
    wobble = torch.zeros_like(r)
    for m, freq in enumerate(HARMONICS):
        a, phi = amp[:, m].view(-1, 1, 1), phase[:, m].view(-1, 1, 1)
        c, s = turns[freq]
        wobble = wobble + a * (c * torch.cos(phi) - s * torch.sin(phi))  # a * cos(freq * angle + phi)
    return r < (1 + wobble) / (1 + amp.sum(1).view(-1, 1, 1))


def _compose(src: torch.Tensor, labels: torch.Tensor, d: dict, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes for one chunk of draws `d` (sliced per scene) from source images src (N, 3, h, w) uint8."""
    b, k = d["pick"].shape
    _, _, h, w = src.shape
    image = _background(src[d["background"]], d["bg_offset"], size)
    mask = torch.zeros(b, size, size, dtype=torch.uint8)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    batch = torch.arange(b).view(b, 1, 1)
    for j in range(k):
        top, left, height, width = (d["box"][:, j, i].view(b, 1) for i in range(4))
        v = ((centres - top) / height).view(b, size, 1)  # position down the box, in [0, 1) inside it
        u = ((centres - left) / width).view(b, 1, size)  # position across the box
        rows = (v * h).long().clamp(0, h - 1)  # nearest neighbour: every object pixel is a source pixel
        cols = (u * w).long().clamp(0, w - 1)
        cols = torch.where(d["flip"][:, j].view(b, 1, 1), w - 1 - cols, cols)
        shape = _outline(h, w, d["power"][:, j], d["amp"][:, j], d["phase"][:, j])
        live = (j < d["count"]).view(b, 1, 1)
        inside = ((v >= 0) & (v < 1) & live) & ((u >= 0) & (u < 1)) & shape[batch, rows, cols]
        pixels = _gather(src[d["pick"][:, j]], rows, cols)
        image = torch.where(inside.unsqueeze(1), pixels, image)
        mask = torch.where(inside, (1 + labels[d["pick"][:, j]]).to(torch.uint8).view(b, 1, 1), mask)
    return image, mask


def make_scenes(
    cifar: ImageTensors, count: int, size: int = 64, seed: int = 0, objects=(2, 4), scale=(0.35, 0.65)
) -> SegTensors:
    """`count` scenes of size x size from the images of one CIFAR split (pass the split the scenes are for:
    train scenes from train images only); `objects` is the inclusive range of objects per scene, `scale`
    the range of an object's side as a fraction of the canvas side."""
    if not 1 <= objects[0] <= objects[1]:
        raise FdkError(f"objects per scene must be a range (low, high) with 1 <= low <= high, got {objects}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise FdkError(f"object scale must be (low, high) with 0 < low <= high <= 1 of the canvas, got {scale}")
    if len(cifar) == 0:
        raise FdkError("make_scenes needs at least one source image")
    generator = torch.Generator().manual_seed(seed)
    draws = _draw(count, len(cifar), size, objects, scale, generator)
    src, labels = cifar.images.cpu(), cifar.labels.cpu()
    images, masks = [], []
    for start in range(0, count, CHUNK):
        chunk = {key: value[start : start + CHUNK] for key, value in draws.items()}
        image, mask = _compose(src, labels, chunk, size)
        images.append(image)
        masks.append(mask)
    device = cifar.images.device
    images = torch.cat(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    masks = torch.cat(masks) if masks else torch.zeros(0, size, size, dtype=torch.uint8)
    return SegTensors(images.to(device), masks.to(device), ("background", *cifar.classes))


def scenes_split(
    cifar_root, split: str, count: int | None = None, size: int = 64, seed: int | None = None
) -> SegTensors:
    """The CIFAR-scenes `split`, built from CIFAR-10's own `split` under cifar_root (data_stats/cifar_scenes.json)."""
    if split not in SCENE_COUNTS:
        raise FdkError(f"CIFAR scenes have splits {', '.join(SCENE_COUNTS)}, not {split!r}")
    cifar = load_split(cifar_root, "cifar10", split)
    count = SCENE_COUNTS[split] if count is None else count
    return make_scenes(cifar, count, size, SCENE_SEEDS[split] if seed is None else seed)
