import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _fdk_data() -> Path | None:
    root = os.environ.get("FDK_DATA")
    if root and (Path(root) / "cifar10" / "test").is_dir():
        return Path(root) / "cifar10"
    return None


@pytest.fixture
def cifar10_root() -> Path:
    """The real CIFAR-10 class folders under $FDK_DATA, or a skip that says how to provide them."""
    root = _fdk_data()
    if root is None:
        pytest.skip(
            "real CIFAR-10 not available: set FDK_DATA to a folder holding cifar10/{train,test}/<class>/*.png "
            "(make test does this when ../shared/data exists)"
        )
    return root


def write_class_folders(root: Path, split: str, classes, per_class: int, size: int = 32, seed: int = 0):
    """Small generated PNGs in the ImageFolder layout; returns the (N, H, W, 3) arrays written."""
    rng = np.random.default_rng(seed)
    arrays = []
    for name in classes:
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(a).save(folder / f"{i:04d}.png")
            arrays.append(a)
    return np.stack(arrays)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch) -> Path:
    """A generated 10-class folder dataset with train/test splits (4 and 2 images per class)."""
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cifar10"
    write_class_folders(root, "train", CIFAR10_CLASSES, 4, seed=1)
    write_class_folders(root, "test", CIFAR10_CLASSES, 2, seed=2)
    return root
