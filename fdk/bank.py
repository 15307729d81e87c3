"""The synthetic-image bank: every synthesised image, kept on the device as uint8 (docs/method.md §4.2).

Upstream wrote each batch to PNG files and rebuilt a 4-worker DataLoader over all of them after every
synthesis call (docs/method.md §7). The bank keeps the same images (uint8, floor-quantised) in one device
tensor and samples KD batches the way that DataLoader did: shuffled passes without replacement, a fresh
pass after every `add`. Unbounded by default, as upstream; `capacity` keeps only the newest images.

Checkpoints stay small however large the bank grows (docs/method.md §8): a bank given a `file` appends
to it, in `state_dict()`, only the images added since the last call (raw uint8, image i at byte offset
i·C·H·W), and its state holds the counts; `load_state_dict` reads them back from that file.
"""

from pathlib import Path

import torch

from fdk.augment import crop_flip, normalize, to_unit
from fdk.utils import FdkError


class SyntheticBank:
    def __init__(self, device="cpu", capacity: int | None = None, file=None):
        self.device, self.capacity = torch.device(device), capacity
        self.file = Path(file) if file is not None else None
        self._storage: torch.Tensor | None = None  # (allocated, C, H, W) uint8, grown by doubling
        self.size = 0  # images kept
        self.total = 0  # images ever added (> size only with a capacity)
        self._flushed = 0  # images already in `file`
        self._order: torch.Tensor | None = None  # the current shuffled pass
        self._cursor = 0

    def __len__(self) -> int:
        return self.size

    @property
    def images(self) -> torch.Tensor:
        """(size, C, H, W) uint8, oldest first (a view, not a copy)."""
        if self._storage is None:
            raise RuntimeError("the bank is empty")
        return self._storage[: self.size]

    def add(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"the bank stores uint8 images (see fdk.augment.quantize), got {images.dtype}")
        images = images.to(self.device)
        if self._storage is None:
            self._storage = torch.empty((0, *images.shape[1:]), dtype=torch.uint8, device=self.device)
        needed = self.size + len(images)
        if needed > len(self._storage):
            allocated = max(needed, 2 * len(self._storage))
            grown = torch.empty((allocated, *images.shape[1:]), dtype=torch.uint8, device=self.device)
            grown[: self.size] = self._storage[: self.size]
            self._storage = grown
        self._storage[self.size : needed] = images
        self.size, self.total = needed, self.total + len(images)
        if self.capacity is not None and self.size > self.capacity:  # drop the oldest
            drop = self.size - self.capacity
            self._storage[: self.capacity] = self._storage[drop : self.size].clone()
            self.size = self.capacity
        self._order, self._cursor = None, 0  # upstream rebuilt its DataLoader after every synthesis call

    def sample(self, batch_size: int) -> torch.Tensor:
        """The next batch of a shuffled pass (uint8); like a DataLoader, a pass's last batch may be short."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty bank")
        if self._order is None or self._cursor >= self.size:
            self._order = torch.randperm(self.size, device=self.device)
            self._cursor = 0
        index = self._order[self._cursor : self._cursor + batch_size]
        self._cursor += len(index)
        return self._storage[index]

    def kd_batch(self, batch_size: int, mean, std, memory_format=torch.contiguous_format) -> torch.Tensor:
        """A KD batch: sampled, augmented with the dataset's train transform (crop pad 4 + flip), normalised."""
        x = crop_flip(to_unit(self.sample(batch_size)))
        return normalize(x, mean, std).contiguous(memory_format=memory_format)

    def state_dict(self) -> dict:
        """The bank's state. With a file, first appends the images added since the last call to it and
        stores only counts; without one, the images themselves."""
        state = {"size": self.size, "total": self.total, "order": self._order, "cursor": self._cursor}
        if self.size == 0:
            return {**state, "images": torch.empty(0, dtype=torch.uint8)}
        if self.file is None:
            return {**state, "images": self.images.cpu().clone()}
        self._flush()
        return {**state, "image_shape": list(self.images.shape[1:])}

    def _flush(self) -> None:
        """Write images _flushed..total-1 at their offsets; earlier bytes are never rewritten."""
        per_image = self.images[0].numel()
        first_kept = self.total - self.size  # global index of images[0]
        new = self.images[max(0, self._flushed - first_kept) :].cpu()
        dropped = max(0, first_kept - self._flushed)  # added and dropped (capacity) before any flush
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file, "r+b" if self.file.exists() else "wb") as f:
            f.seek(self._flushed * per_image)
            f.truncate()  # bytes after the last checkpoint's count belong to no checkpoint
            f.write(bytes(dropped * per_image))  # placeholders: resume never reads them
            f.write(new.numpy().tobytes())
        self._flushed = self.total

    def load_state_dict(self, state: dict) -> None:
        self._storage, self.size, self.total, self._flushed = None, 0, 0, 0
        if "images" in state:
            if len(state["images"]):
                self.add(state["images"])
        else:
            shape, per_image = tuple(state["image_shape"]), 1
            for n in shape:
                per_image *= n
            start = state["total"] - state["size"]
            data = self.file.read_bytes()[start * per_image : state["total"] * per_image]
            if len(data) != state["size"] * per_image:
                raise FdkError(
                    f"{self.file} holds {len(data) // per_image} of the checkpoint's {state['size']} images: "
                    "the bank file is truncated; the run cannot be resumed from this folder"
                )
            images = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(state["size"], *shape)
            self.add(images)
        self.size, self.total = state["size"], state["total"]
        self._flushed = state["total"] if "images" not in state else 0
        order = state["order"]
        self._order = None if order is None else order.to(self.device)
        self._cursor = state["cursor"]

    def save_grid(self, path, n: int = 64, nrow: int = 8, newest: bool = True) -> Path:
        """A PNG grid of n images (the newest by default), for inspection."""
        from torchvision.utils import save_image

        images = self.images[-n:] if newest else self.images[:n]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(to_unit(images.cpu()), path, nrow=nrow, padding=1)
        return path

    def export_png(self, folder) -> int:
        """Every image as `{index}.png` (upstream's pool layout), e.g. for other tools; returns the count."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(self.images.permute(0, 2, 3, 1).cpu().numpy()):
            Image.fromarray(image).save(folder / f"{i}.png")
        return self.size


def read_bank_file(path, total: int, size: int, image_shape) -> torch.Tensor:
    """The images a finished run's bank held: the last `size` of the first `total` in its bank file."""
    bank = SyntheticBank(file=path)
    bank.load_state_dict({"size": size, "total": total, "order": None, "cursor": 0, "image_shape": image_shape})
    return bank.images
