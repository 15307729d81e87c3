"""Datasets: facts from `data_stats/`, image splits decoded once into uint8 tensors, device-side batches.

A split is read from either layout and cached as one uint8 tensor, so epochs never re-decode PNGs:

    <root>/<split>/<class>/<image>.png             class folders (torchvision ImageFolder layout);
    <root>/<dataset>/<split>/<class>/<image>.png   the same under a data root such as $FDK_DATA;
    <root>/cifar-10-batches-py/, cifar-100-python/ torchvision's CIFAR files (`download=True` fetches them);
    <root>/<split>-part-00.safetensors, ...         a packed split (`pack_split`): uint8 tensors in parts of
                                                    a chosen size, to move a dataset where PNG folders are awkward.
"""

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdk.augment import crop_flip, normalize, to_unit
from fdk.checkpoint import atomic_save
from fdk.inputs import InputSpec, dataset_spec
from fdk.utils import FdkError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclass
class ImageTensors:
    """A decoded split: images (N, 3, H, W) uint8 and labels (N,) int64, on any device."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "ImageTensors":
        return ImageTensors(self.images.to(device), self.labels.to(device), self.classes)


@dataclass
class SegTensors:
    """A decoded segmentation split (docs/method.md §12): images (N, 3, H, W) uint8 and label maps (N, H, W)
    uint8 (255 = unlabelled), on any device. fdk.segdata loads them; fdk.scenes makes them."""

    images: torch.Tensor
    masks: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.masks)

    def to(self, device) -> "SegTensors":
        return SegTensors(self.images.to(device), self.masks.to(device), self.classes)


def expected_layout(root, dataset: str, split: str) -> str:
    torchvision_folder = TORCHVISION_FOLDERS.get(dataset, "<torchvision files>")
    return (
        f"expected class folders {root}/{split}/<class>/<image>.png or {root}/{dataset}/{split}/<class>/<image>.png, "
        f"torchvision's {root}/{torchvision_folder}/ (--download fetches it), "
        f"or a packed split {root}/{split}-part-00.safetensors (fdk.data.pack_split)"
    )


def _locate(root: Path, dataset: str, split: str, download: bool):
    """Where a split lives under root: ('packed', parts) / ('folders', folder) / ('torchvision', base) / None."""
    for base in (root, root / dataset):
        if parts := sorted(base.glob(f"{split}-part-*.safetensors")):
            return "packed", parts
    for folder in (root / split, root / dataset / split):
        if folder.is_dir():
            return "folders", folder
    if dataset in TORCHVISION_FOLDERS:
        for base in (root, root / dataset):
            if (base / TORCHVISION_FOLDERS[dataset]).is_dir() or (download and base == root):
                return "torchvision", base
    return None


def load_split(
    root, dataset: str = "cifar10", split: str = "train", download: bool = False, cache: bool = True
) -> ImageTensors:
    """Decode a split of `dataset` under `root` into uint8 tensors (cached after the first call)."""
    root = Path(root).expanduser()
    info = dataset_spec(dataset)
    found = _locate(root, dataset, split, download)
    if found is None:
        raise FdkError(f"no {dataset} {split} split found under {root}; " + expected_layout(root, dataset, split))
    kind, where = found
    if kind == "torchvision":
        return _load_torchvision_cifar(where, dataset, split, download)
    data = load_packed(where) if kind == "packed" else _load_class_folders(where, cache)
    _check_classes(data, info, where[0].parent if kind == "packed" else where)
    return data


def find_split(root, dataset: str = "cifar10", split: str = "test") -> ImageTensors | None:
    """The split when `root` holds it, else None (for optional evaluation data); root None or "": None."""
    if not root or _locate(Path(root).expanduser(), dataset, split, download=False) is None:
        return None
    return load_split(root, dataset, split)


def pack_split(data: ImageTensors, out_dir, split: str, part_mib: float = 40) -> list[Path]:
    """Write a split as `<split>-part-NN.safetensors` files of at most `part_mib` MiB each (uint8 images,
    labels, class names in the metadata); `load_split(out_dir, ...)` reads them back bit-exactly."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image = data.images[0].numel() + 8  # uint8 pixels + an int64 label
    per_part = max(1, int(part_mib * 2**20) // per_image)
    files = []
    for number, start in enumerate(range(0, len(data), per_part)):
        path = out_dir / f"{split}-part-{number:02d}.safetensors"
        tensors = {
            "images": data.images[start : start + per_part].contiguous(),
            "labels": data.labels[start : start + per_part].contiguous(),
        }
        save_file(tensors, str(path), metadata={"classes": json.dumps(list(data.classes)), "total": str(len(data))})
        files.append(path)
    return files


def load_packed(parts: list[Path]) -> ImageTensors:
    from safetensors import safe_open

    images, labels, classes, total = [], [], None, None
    for path in parts:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            images.append(f.get_tensor("images"))
            labels.append(f.get_tensor("labels"))
            classes, total = tuple(json.loads(meta.get("classes", "[]"))), int(meta.get("total", -1))
    data = ImageTensors(torch.cat(images), torch.cat(labels), classes)
    if len(data) != total:
        raise FdkError(
            f"packed split {parts[0].parent} is incomplete: {len(data)} of {total} images in {len(parts)} parts"
        )
    return data


def _check_classes(data: ImageTensors, info: InputSpec, folder: Path) -> None:
    if data.classes != info.classes:
        missing = sorted(set(info.classes) - set(data.classes))
        extra = sorted(set(data.classes) - set(info.classes))
        raise FdkError(
            f"class folders in {folder} do not match {info.name}'s {info.num_classes} classes "
            f"(data_stats/{info.name}.json): missing {missing[:5]}, unexpected {extra[:5]}"
        )


def _cache_dir() -> Path:
    return Path(os.environ.get("FDK_CACHE", Path.home() / ".cache" / "fdk"))


def _load_class_folders(folder: Path, cache: bool) -> ImageTensors:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise FdkError(f"{folder} has no class folders; expected {folder}/<class>/<image>.png")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FdkError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [label] * len(found)

    # The cache key covers every file's name, size and mtime: any change re-decodes.
    digest = hashlib.sha1(str(folder.resolve()).encode())
    for p in files:
        st = p.stat()
        digest.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache_file = _cache_dir() / f"{folder.parent.name}-{folder.name}-{digest.hexdigest()[:16]}.pt"
    if cache and cache_file.exists():
        saved = torch.load(cache_file, weights_only=True)
        return ImageTensors(saved["images"], saved["labels"], tuple(saved["classes"]))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        arrays = list(pool.map(_decode, files))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(f for f, a in zip(files, arrays) if a.shape != first)
        raise FdkError(f"images in {folder} differ in size ({first} vs {odd}: {odd.shape}); resize them first")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    data = ImageTensors(images, torch.tensor(labels, dtype=torch.int64), tuple(classes))
    if cache:
        atomic_save({"images": data.images, "labels": data.labels, "classes": list(classes)}, cache_file)
    return data


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise FdkError(f"cannot decode {path}: {error}") from error


def _load_torchvision_cifar(root: Path, dataset: str, split: str, download: bool) -> ImageTensors:
    import torchvision

    if split not in ("train", "test"):
        raise FdkError(f"CIFAR has splits 'train' and 'test', not {split!r}")
    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as error:
        raise FdkError(
            f"{dataset} not found or corrupted under {root} ({error}); with internet pass --download, "
            f"otherwise put torchvision's {TORCHVISION_FOLDERS[dataset]}/ folder there, or class folders: "
            + expected_layout(root, dataset, split)
        ) from error
    except OSError as error:  # the download itself failed: no internet
        raise FdkError(
            f"could not download {dataset} ({error}); no internet? Put the files under {root}: "
            + expected_layout(root, dataset, split)
        ) from error
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes))


def batches(
    data: ImageTensors,
    batch_size: int,
    mean,
    std,
    shuffle: bool = False,
    augment: bool = False,
    drop_last: bool = False,
    memory_format=torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of normalised float batches, made on the tensors' own device (no DataLoader)."""
    n = len(data)
    order = torch.randperm(n, device=data.images.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size] if shuffle else slice(start, start + batch_size)
        x = to_unit(data.images[index])
        if augment:
            x = crop_flip(x)
        x = normalize(x, mean, std).contiguous(memory_format=memory_format)
        yield x, data.labels[index]
