"""Where the bank puts the images that do not fit on the device: host memory or a memmap file (docs/bank.md).

A 224 px uint8 image is 150,528 bytes, so ImageNet-scale banks (400k images, 60 GB) do not fit one GPU.
SyntheticBank keeps its first `device_images` images on the device and appends the rest to one of these
spill tiers. Both grow by doubling, as the device tier does, and both serve KD batches with one gather per
batch (torch.index_select / numpy.take on sorted indices), never a Python loop over images.

The host tier is plain pageable memory, not pinned: the copy to the device reads the gathered batch, which
the bank stages in pinned memory, never the tier itself. Pinning the tier would lock tens of GB and, through
PyTorch's pinned allocator, round every growth up to a power of two and keep the outgrown blocks cached.
"""

import math
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from fdk.checkpoint import write_failed

SPILLS = ("host", "disk")


def bank_bytes(n_images: int, image_shape) -> int:
    """Bytes that n uint8 images of shape (C, H, W) take: 3·224·224 = 150,528 each at 224 px, 3,072 at 32 px."""
    return n_images * math.prod(image_shape)


def grown(allocated: int, needed: int) -> int:
    """The next allocation: doubling amortises the copies of growing to O(1) per image."""
    return max(needed, 2 * allocated)


class HostSpill:
    """Spilled images in one uint8 CPU tensor, oldest first."""

    def __init__(self):
        self._data: torch.Tensor | None = None  # (allocated, C, H, W)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return 0 if self._data is None else self._data.numel()

    def append(self, images: torch.Tensor) -> None:
        needed = self.size + len(images)
        if self._data is None or needed > len(self._data):
            allocated = grown(0 if self._data is None else len(self._data), needed)
            data = torch.empty((allocated, *images.shape[1:]), dtype=torch.uint8)
            if self._data is not None:
                data[: self.size] = self._data[: self.size]
            self._data = data
        self._data[self.size : needed] = images
        self.size = needed

    def gather(self, index: torch.Tensor, out: torch.Tensor) -> None:
        """out[j] = image index[j]; index is a sorted CPU int64 tensor."""
        torch.index_select(self._data, 0, index, out=out)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Images start..stop-1, copied (callers may keep them while the tier grows)."""
        return self._data[start:stop].clone()

    def close(self) -> None:
        self._data, self.size = None, 0


class DiskSpill:
    """Spilled images in a numpy memmap file, oldest first. A bank that names no file gets a temporary one,
    removed on close() or when the bank is garbage-collected; a named file is the caller's and is kept."""

    def __init__(self, path=None):
        self._remove = None
        if path is None:
            fd, path = tempfile.mkstemp(prefix="fdk-bank-", suffix=".spill")
            os.close(fd)
            self._remove = weakref.finalize(self, _unlink, path)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")  # scratch: whatever a named file held before is not ours
        self._map: np.memmap | None = None  # (allocated, C, H, W)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return 0 if self._map is None else self._map.size

    def append(self, images: torch.Tensor) -> None:
        needed = self.size + len(images)
        if self._map is None or needed > len(self._map):
            allocated = grown(0 if self._map is None else len(self._map), needed)
            self._map = None  # unmap before resizing; the bytes already written stay in the file
            reserve(self.path, bank_bytes(allocated, images.shape[1:]))
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=(allocated, *images.shape[1:]))
        self._map[self.size : needed] = images.numpy()
        self.size = needed

    def gather(self, index: torch.Tensor, out: torch.Tensor) -> None:
        """out[j] = image index[j]; index is a sorted CPU int64 tensor, so the reads go forward in the file."""
        np.take(self._map, index.numpy(), axis=0, out=out.numpy(), mode="clip")  # "clip": no buffered copy

    def read(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self._map[start:stop]))

    def close(self) -> None:
        self._map, self.size = None, 0
        if self._remove is not None:
            self._remove()


def reserve(path: Path, size: int) -> None:
    """Grow the memmap file to `size` bytes with the disk blocks allocated now: a sparse file (truncate)
    would meet a full disk only when a page is written through the map, and die of SIGBUS there. Here a
    full disk is a clear error, and the run's checkpoint is untouched (the spill file is scratch)."""
    try:
        with open(path, "r+b") as f:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, size)
            else:  # macOS: no posix_fallocate; sparse as before
                f.truncate(size)
    except OSError as error:
        raise write_failed(path, error, size - os.path.getsize(path)) from None


def _unlink(path) -> None:
    Path(path).unlink(missing_ok=True)


def make_spill(kind: str, path=None) -> HostSpill | DiskSpill:
    return HostSpill() if kind == "host" else DiskSpill(path)
