"""Segmentation splits: NYUv2 (13 classes) decoded and resized once into uint8 tensors, device-side batches.

Two NYUv2 layouts are read (docs/method.md §12), under `<root>/NYUv2/` or with root the NYUv2 folder itself:

    VainF (upstream datafree):  image/{train,test}/*.png and seg13/{train,test}/*.png, the same file names;
                                labels 0..12, 255 = unlabeled; sorted file names give the order.
    DFAD:                       480_640/IMAGE/<i-1>.png, nyuv2-meta-data/splits.mat (trainNdxs, testNdxs:
                                1-based indices), nyuv2-meta-data/<split>_labels_13/new_nyu_class13_<iiii>.png
                                with raw labels 0 = unlabeled -> 255 and k -> k-1.

The protocol's Resize(256) (shorter side; bilinear images, nearest labels) happens once at load time; the
train RandomCrop(128) + horizontal flip happens per batch on the device, one gather for image and mask.
`load_seg_split` also serves fdk's own CIFAR scenes (fdk.scenes).
"""

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdk.augment import normalize, to_unit
from fdk.checkpoint import atomic_save
from fdk.data import SegTensors, _cache_dir, find_split, load_split
from fdk.imagenet_data import find_imagenet_val, load_imagenet_val
from fdk.inputs import dataset_spec
from fdk.scenes import scenes_split
from fdk.utils import FdkError

IGNORE_INDEX = 255
NYU_CLASSES = 13
IMAGENET_EVAL_SPLITS = ("test", "val")  # both name ImageNet's val set


def expected_nyu_layouts(root) -> str:
    return (
        f"expected under {root} or {root}/NYUv2 either VainF's image/<split>/*.png + seg13/<split>/*.png "
        "(same names, labels 0..12 and 255) or DFAD's 480_640/IMAGE/<i-1>.png + nyuv2-meta-data/splits.mat + "
        "nyuv2-meta-data/<split>_labels_13/new_nyu_class13_<iiii>.png (labels 0..13, 0 = unlabeled)"
    )


def _nyu_pairs(root: Path, split: str) -> tuple[list[Path], list[Path], bool]:
    """(image files, label files, raw DFAD labels?) of a split in whichever layout root holds."""
    for base in (root, root / "NYUv2"):
        image_dir, label_dir = base / "image" / split, base / "seg13" / split
        if image_dir.is_dir() and label_dir.is_dir():
            images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() == ".png")
            labels = sorted(p for p in label_dir.iterdir() if p.suffix.lower() == ".png")
            if [p.name for p in images] != [p.name for p in labels]:
                odd = sorted({p.name for p in images} ^ {p.name for p in labels})
                raise FdkError(
                    f"NYUv2 {split}: {len(images)} images in {image_dir} but {len(labels)} labels in {label_dir}, "
                    f"names differ (e.g. {odd[:3]}); " + expected_nyu_layouts(root)
                )
            if not images:
                raise FdkError(f"NYUv2 {split}: no PNG images in {image_dir}; " + expected_nyu_layouts(root))
            return images, labels, False
        mat = base / "nyuv2-meta-data" / "splits.mat"
        if (base / "480_640" / "IMAGE").is_dir() and mat.is_file():
            indices = _split_indices(mat, split, root)
            images = [base / "480_640" / "IMAGE" / f"{i - 1}.png" for i in indices]
            label_dir = base / "nyuv2-meta-data" / f"{split}_labels_13"
            labels = [label_dir / f"new_nyu_class13_{i:04d}.png" for i in indices]
            missing = [p for p in images + labels if not p.is_file()]
            if missing:
                raise FdkError(
                    f"NYUv2 {split}: {len(missing)} of the {len(images)} images and {len(labels)} labels that "
                    f"{mat.name} lists are missing (e.g. {missing[0]}); " + expected_nyu_layouts(root)
                )
            return images, labels, True
    raise FdkError(f"no NYUv2 {split} split found; " + expected_nyu_layouts(root))


def _split_indices(mat: Path, split: str, root: Path) -> list[int]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise FdkError(f"reading {mat} needs scipy: pip install scipy (or use the VainF layout)") from None
    key = f"{split}Ndxs"
    try:
        table = loadmat(str(mat))
    except (OSError, ValueError) as error:
        raise FdkError(f"cannot read {mat} ({error}); " + expected_nyu_layouts(root)) from None
    if key not in table:
        raise FdkError(f"{mat} has no {key} (it holds {sorted(k for k in table if not k.startswith('__'))})")
    indices = [int(i) for i in np.asarray(table[key]).reshape(-1)]
    if not indices or min(indices) < 1:
        raise FdkError(f"{mat}: {key} must be 1-based image indices, got min {min(indices, default=None)}")
    return indices


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes `size`, the longer int(size * long / short)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _decode_pair(image_path: Path, label_path: Path, size: int, raw: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        with Image.open(image_path) as im, Image.open(label_path) as lab:
            image, array = im.convert("RGB"), np.asarray(lab)
    except OSError as error:
        raise FdkError(f"cannot decode {image_path} or {label_path}: {error}") from None
    if array.ndim != 2:
        raise FdkError(f"label {label_path} has shape {array.shape}; expected one channel of class indices")
    if array.shape != (image.height, image.width):
        raise FdkError(f"label {label_path} is {array.shape} but its image {image_path} is {image.height, image.width}")
    valid = np.arange(NYU_CLASSES + 1) if raw else np.r_[np.arange(NYU_CLASSES), IGNORE_INDEX]
    bad = np.setdiff1d(np.unique(array), valid)
    if bad.size:
        allowed = "0..13 (DFAD raw, 0 = unlabeled)" if raw else "0..12 and 255"
        raise FdkError(f"label {label_path} holds values {bad[:5].tolist()} outside {allowed}")
    h, w = resized_shape(image.height, image.width, size)
    image = np.asarray(image.resize((w, h), Image.BILINEAR))
    label = np.asarray(Image.fromarray(array.astype(np.uint8)).resize((w, h), Image.NEAREST))  # never invents a class
    if raw:
        label = np.where(label == 0, IGNORE_INDEX, label - 1).astype(np.uint8)
    return image, label


def load_nyuv2(root, split: str = "train", size: int = 256, cache: bool = True) -> SegTensors:
    """NYUv2's 13-class `split` resized to shorter side `size`, from either layout (cached after the first call)."""
    root = Path(root).expanduser()
    if split not in ("train", "test"):
        raise FdkError(f"NYUv2 has splits 'train' and 'test', not {split!r}")
    images, labels, raw = _nyu_pairs(root, split)
    classes = dataset_spec("nyuv2").classes

    # The cache key covers every file's path, size and mtime and the resize: any change re-decodes.
    digest = hashlib.sha1(f"{root.resolve()}:{size}:{raw}".encode())
    for p in images + labels:
        st = p.stat()
        digest.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache_file = _cache_dir() / f"nyuv2-{split}-{size}-{digest.hexdigest()[:16]}.pt"
    if cache and cache_file.exists():
        saved = torch.load(cache_file, weights_only=True)
        return SegTensors(saved["images"], saved["masks"], classes)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        pairs = list(pool.map(lambda pair: _decode_pair(*pair, size, raw), zip(images, labels)))
    shapes = {image.shape for image, _ in pairs}
    if len(shapes) > 1:
        raise FdkError(f"NYUv2 {split} images differ in aspect ratio ({sorted(shapes)[:3]}); expected 480x640 each")
    data = SegTensors(
        torch.from_numpy(np.stack([image for image, _ in pairs])).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack([label for _, label in pairs])),
        classes,
    )
    if cache:
        atomic_save({"images": data.images, "masks": data.masks}, cache_file)
    return data


def _randint(high: int, shape, generator, device) -> torch.Tensor:
    """Draws from `generator` on its own device (reproducible anywhere), then moves them to `device`."""
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(0, high, shape, generator=generator, device=generator.device).to(device)


def crop_flip_pairs(
    images: torch.Tensor, masks: torch.Tensor, crop, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synchronised RandomCrop(crop) + RandomHorizontalFlip of images (B, C, H, W) and masks (B, H, W):
    one index per sample, used by both, so each mask stays aligned with its image."""
    b, _, h, w = images.shape
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    if ch > h or cw > w:
        raise FdkError(f"crop {ch}x{cw} is larger than the images ({h}x{w}); lower the crop or resize larger")
    device = images.device
    dy = _randint(h - ch + 1, (b, 1, 1), generator, device)
    dx = _randint(w - cw + 1, (b, 1, 1), generator, device)
    flip = _randint(2, (b, 1, 1), generator, device).bool()
    cols = torch.arange(cw, device=device)
    cols = dx + torch.where(flip, cols.flip(0), cols)  # (B, 1, cw): a flipped sample reads its crop backwards
    rows = dy.view(b, 1, 1) + torch.arange(ch, device=device).view(1, ch, 1)  # (B, ch, 1)
    batch = torch.arange(b, device=device).view(b, 1, 1)
    crops = images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, ch, cw)
    return crops.contiguous(), masks[batch, rows, cols]


def seg_batches(
    data: SegTensors,
    batch_size: int,
    mean,
    std,
    shuffle: bool = False,
    augment: bool = False,
    crop=None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (normalised float (B, 3, h, w), int64 masks (B, h, w)) on the data's device; with
    `augment`, a synchronised random `crop` (None: the full image, so a flip only) and flip per sample."""
    if augment and crop is None:
        crop = tuple(data.images.shape[-2:])
    device = data.images.device
    n = len(data)
    if shuffle:
        if generator is None:
            order = torch.randperm(n, device=device)
        else:
            order = torch.randperm(n, generator=generator, device=generator.device).to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size] if shuffle else slice(start, start + batch_size)
        images, masks = data.images[index], data.masks[index]
        if augment:
            images, masks = crop_flip_pairs(images, masks, crop, generator)
        yield normalize(to_unit(images), mean, std), masks.long()


def load_seg_split(root, dataset: str, split: str) -> SegTensors:
    """A segmentation split by dataset name: 'nyuv2' (resized to 256) or 'cifar_scenes' (from CIFAR-10 under
    root)."""
    if dataset == "nyuv2":
        return load_nyuv2(root, split)
    if dataset == "cifar_scenes":
        return scenes_split(root, split)
    raise FdkError(f"unknown segmentation dataset {dataset!r}; known: nyuv2, cifar_scenes")


def load_task_split(root, dataset: str, split: str, download: bool = False):
    """A real split of a classification (ImageTensors) or segmentation (SegTensors) dataset, by its task;
    ImageNet's "test" is its val set (fdk.imagenet_data: the test labels are not public)."""
    if dataset == "imagenet" and split in IMAGENET_EVAL_SPLITS:
        return load_imagenet_val(root)
    if dataset_spec(dataset).dense:
        return load_seg_split(root, dataset, split)
    return load_split(root, dataset, split, download=download)


def find_task_split(root, dataset: str, split: str = "test"):
    """`load_task_split` when root holds the split, else None (optional evaluation data; root "" or None: None)."""
    if not root:
        return None
    if dataset == "imagenet" and split in IMAGENET_EVAL_SPLITS:
        return load_imagenet_val(root) if find_imagenet_val(root) is not None else None
    if not dataset_spec(dataset).dense:
        return find_split(root, dataset, split)
    try:
        return load_seg_split(root, dataset, split)
    except FdkError:
        return None
