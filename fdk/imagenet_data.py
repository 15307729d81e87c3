"""ImageNet's validation split, decoded once with the standard eval transform into uint8 tensors.

ImageNet's test labels are not public, so fdk evaluates ImageNet teachers and students on the 50,000 val
images: fdk's "test" (and "val") split of dataset "imagenet" is this set. Layouts found under a data root:

    <root>/val/<wnid>/<image>.JPEG               class folders (ImageFolder; also torchvision's parsed layout,
    <root>/imagenet/val/<wnid>/<image>.JPEG      where val/ sits next to its meta.bin);
    <root>/ILSVRC2012/val/<wnid>/<image>.JPEG    the folder upstream FastDFKD handed to torchvision's ImageNet;
    <root>[/ILSVRC2012]/ILSVRC2012_img_val.tar   the two archives torchvision reads: the first load lets
      + ILSVRC2012_devkit_t12.tar.gz             torchvision.datasets.ImageNet(split="val") unpack them into val/.

Labels are the index of the wnid folder in sorted order, which is torchvision's class order and the order
of data_stats/imagenet.json "classes". Every image gets the eval transform torchvision's weights were
measured with: Resize(256) (shorter side, PIL bilinear) then CenterCrop(224).
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdk.checkpoint import atomic_save
from fdk.data import IMAGE_SUFFIXES, ImageTensors, _cache_dir
from fdk.inputs import dataset_spec
from fdk.utils import FdkError

NUM_CLASSES = 1000
ARCHIVES = ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")


def _bases(root: Path) -> tuple[Path, ...]:
    return root, root / "imagenet", root / "ILSVRC2012"


def expected_imagenet_layouts(root) -> str:
    """The layouts `find_imagenet_val` looks for, as one line for error messages."""
    return (
        f"expected class folders {root}/val/<wnid>/<image>.JPEG, {root}/imagenet/val/<wnid>/... or "
        f"{root}/ILSVRC2012/val/<wnid>/... (torchvision's ImageNet layout), or torchvision's archives "
        f"{' + '.join(ARCHIVES)} in {root} or {root}/ILSVRC2012 (unpacked into val/ on first use)"
    )


def _locate(root: Path) -> tuple[str, Path] | None:
    """('folder', val folder) or ('archives', folder holding both archives) or None; folders win."""
    for base in _bases(root):
        if (base / "val").is_dir():
            return "folder", base / "val"
    for base in _bases(root):
        if all((base / name).is_file() for name in ARCHIVES):
            return "archives", base
    return None


def find_imagenet_val(root) -> Path | None:
    """The val class-folder directory under root, or None when no layout is there (root "" or None: None).

    When only torchvision's two archives are there, torchvision unpacks them into <base>/val/ first: once,
    and it takes minutes (it checks the archives' MD5 sums, then sorts 50,000 images into wnid folders)."""
    if not root:
        return None
    found = _locate(Path(root).expanduser())
    if found is None:
        return None
    kind, where = found
    return where if kind == "folder" else _unpack_archives(where)


def _unpack_archives(base: Path) -> Path:
    import torchvision

    try:
        torchvision.datasets.ImageNet(str(base), split="val")
    except (RuntimeError, OSError, ImportError) as error:  # corrupt archive (MD5), disk full, no scipy
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FdkError(
            f"torchvision could not unpack the ImageNet val archives in {base} ({reason}); re-download "
            f"{' and '.join(ARCHIVES)}, or unpack the val images yourself into {base}/val/<wnid>/"
        ) from None
    if not (base / "val").is_dir():
        raise FdkError(f"torchvision unpacked {base} but left no {base}/val/; unpack it into {base}/val/<wnid>/")
    return base / "val"


def _class_files(folder: Path) -> tuple[list[str], list[list[Path]]]:
    """Sorted wnid folders and each one's sorted image files; exactly 1000 non-empty folders are required."""
    wnids = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if len(wnids) != NUM_CLASSES:
        raise FdkError(
            f"found {len(wnids)} class folders in {folder}, ImageNet has {NUM_CLASSES}; put every val image in "
            f"{folder}/<wnid>/ (one folder per wnid, as torchvision.datasets.ImageNet(root, split='val') makes)"
        )
    files = []
    for wnid in wnids:
        found = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FdkError(
                f"class folder {folder / wnid} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "restore its val images or re-unpack the val archive"
            )
        files.append(found)
    return wnids, files


def balanced_subset(files: list[list[Path]], limit: int | None) -> list[tuple[int, Path]]:
    """(label, file) pairs, class by class; with `limit`, the first `limit` of a round-robin over classes.

    Round r takes image r (sorted names) of every class that has one, classes in label order, so
    limit=1000 is the first image of each class and limit=2500 two of every class plus a third of the
    first 500: a subset that covers the classes evenly and is the same on every machine."""
    if limit is not None and limit < 1:
        raise FdkError(f"limit must be a positive number of images, got {limit}; pass None for the whole val set")
    chosen: list[list[Path]] = [[] for _ in files]
    if limit is None:
        chosen = [list(f) for f in files]
    else:
        taken, r = 0, 0
        while taken < limit and any(r < len(f) for f in files):
            for label, class_files in enumerate(files):
                if r < len(class_files) and taken < limit:
                    chosen[label].append(class_files[r])
                    taken += 1
            r += 1
    return [(label, path) for label, paths in enumerate(chosen) for path in paths]


def resize_shorter(height: int, width: int, resize: int) -> tuple[int, int]:
    """torchvision's Resize(int) output (h, w): the shorter side becomes `resize`, the longer is truncated."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def eval_transform(image: Image.Image, resize: int = 256, size: int = 224) -> np.ndarray:
    """Resize(resize) + CenterCrop(size) on a PIL image, the way torchvision does it on PIL (bilinear
    resampling, which PIL antialiases; the crop offset rounds half to even, as torchvision's round())."""
    image = image.convert("RGB")  # grayscale, CMYK and palette JPEGs become RGB, as ImageFolder's loader does
    h, w = resize_shorter(image.height, image.width, resize)
    image = image.resize((w, h), Image.BILINEAR)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.array(image.crop((left, top, left + size, top + size)))  # a writable copy, for torch.from_numpy


def _decode(path: Path, resize: int, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return eval_transform(image, resize, size)
    except OSError as error:
        raise FdkError(f"cannot decode {path}: {error}; re-extract or remove that file") from None


def _cache_file(folder: Path, wnids: list[str], chosen, limit, resize: int, size: int) -> Path:
    """Keyed by the folder, the transform, the limit and every chosen file's class, name, size and mtime."""
    digest = hashlib.sha1(f"{folder.resolve()}:{resize}:{size}:{limit}".encode())
    for label, p in chosen:
        st = p.stat()
        digest.update(f"{label}:{wnids[label]}/{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return _cache_dir() / f"imagenet-val-{size}-{len(chosen)}-{digest.hexdigest()[:16]}.pt"


def load_imagenet_val(
    root, limit: int | None = None, resize: int = 256, size: int = 224, cache: bool = True
) -> ImageTensors:
    """ImageNet val as uint8 images (N, 3, size, size) after Resize(resize) + CenterCrop(size), labels (N,)
    int64 in torchvision's class order; `limit` takes a class-balanced subset (`balanced_subset`).

    The whole set is 7.5 GB of uint8 at 224 px, so a limit suits quick checks; with `cache`, the decoded
    tensors are kept under $FDK_CACHE and read back on the next call instead of decoding 50,000 JPEGs."""
    root = Path(root).expanduser()
    if size > resize:
        raise FdkError(f"crop size {size} is larger than the resize {resize}; use size <= resize (e.g. 224 and 256)")
    folder = find_imagenet_val(root)
    if folder is None:
        raise FdkError(f"no ImageNet val split found under {root}; " + expected_imagenet_layouts(root))
    wnids, files = _class_files(folder)
    chosen = balanced_subset(files, limit)
    classes = dataset_spec("imagenet").classes  # names in wnid order: what reports and figures print

    cache_file = _cache_file(folder, wnids, chosen, limit, resize, size)
    if cache and cache_file.exists():
        saved = torch.load(cache_file, weights_only=True)
        return ImageTensors(saved["images"], saved["labels"], classes)

    images = torch.empty((len(chosen), 3, size, size), dtype=torch.uint8)  # filled in place: no second copy

    def fill(index: int) -> None:
        images[index] = torch.from_numpy(_decode(chosen[index][1], resize, size)).permute(2, 0, 1)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes and resizes without the GIL
        list(pool.map(fill, range(len(chosen))))
    labels = torch.tensor([label for label, _ in chosen], dtype=torch.int64)
    if cache:
        atomic_save({"images": images, "labels": labels}, cache_file)
    return ImageTensors(images, labels, classes)
