"""The synthetic-image bank: every synthesised image, kept as uint8 (docs/method.md §4.2, docs/bank.md).

Upstream wrote each batch to PNG files and rebuilt a 4-worker DataLoader over all of them after every
synthesis call (docs/method.md §7). The bank keeps the same images (uint8, floor-quantised) in one device
tensor and samples KD batches the way that DataLoader did: shuffled passes without replacement, a fresh
pass after every `add`. Unbounded by default, as upstream; `capacity` keeps only the newest images.

At ImageNet scale the bank outgrows the device (400k images of 150,528 bytes = 60 GB), so `device_images`
keeps only the oldest that many on the device and spills the rest to host memory or a memmap file
(fdk/bank_storage.py). Sampling stays uniform over all images; with nothing spilled it is exactly the
device-only bank, same random stream included.

Checkpoints stay small however large the bank grows (docs/method.md §8): a bank given a `file` appends
to it, in `state_dict()`, only the images added since the last call (raw uint8, image i at byte offset
i·C·H·W), and its state holds the counts; `load_state_dict` reads them back from that file.
"""

import io
import itertools
from pathlib import Path

import torch

from fdk.augment import crop_flip, normalize, to_unit
from fdk.bank_storage import SPILLS, bank_bytes, make_spill
from fdk.checkpoint import atomic_write, write_at
from fdk.utils import FdkError

__all__ = ["SyntheticBank", "bank_bytes", "read_bank_file"]

CHUNK_BYTES = 1 << 28  # file and PNG I/O goes this many bytes at a time, never the whole bank at once


class SyntheticBank:
    def __init__(self, device="cpu", capacity: int | None = None, file=None, device_images: int | None = None,
                 spill: str = "host", spill_file=None):  # fmt: skip
        if spill not in SPILLS:
            raise FdkError(f"unknown spill {spill!r}; use spill='host' (CPU memory) or spill='disk' (a memmap file)")
        if capacity is not None and device_images is not None:
            raise FdkError("capacity with device_images is not supported (a capped bank that spills); pass only one")
        if device_images is not None and device_images < 0:
            raise FdkError(f"device_images={device_images} is negative; pass 0 or more, or None to keep all there")
        if spill_file is not None and spill != "disk":
            raise FdkError("spill_file is only used with spill='disk'; pass spill='disk' or drop spill_file")
        self.device, self.capacity = torch.device(device), capacity
        self.file = Path(file) if file is not None else None
        self.device_images, self.spill, self.spill_file = device_images, spill, spill_file
        self._pin = self.device.type == "cuda"  # stage spilled batches in pinned memory: asynchronous copies
        self._storage: torch.Tensor | None = None  # (allocated, C, H, W) uint8 on the device, grown by doubling
        self._spill = None  # the spill tier, made when the first image spills
        self.size = 0  # images kept
        self.total = 0  # images ever added (> size only with a capacity)
        self._flushed = 0  # images already in `file`
        self._order: torch.Tensor | None = None  # the current shuffled pass
        self._cursor = 0

    def __len__(self) -> int:
        return self.size

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def on_device(self) -> int:
        """Images held on the device: images 0..on_device-1; the rest are in the spill tier."""
        return self.size if self.device_images is None else min(self.size, self.device_images)

    @property
    def spilled(self) -> int:
        return self.size - self.on_device

    @property
    def image_shape(self) -> tuple[int, ...]:
        if self._storage is None:
            raise RuntimeError("the bank is empty")
        return tuple(self._storage.shape[1:])

    @property
    def images(self) -> torch.Tensor:
        """(size, C, H, W) uint8, oldest first: a view of the device tensor when nothing spilled; else a
        concatenation of both tiers copied to the CPU, for inspection, not training (use `sample`)."""
        if self._storage is None:
            raise RuntimeError("the bank is empty")
        return self._read(0, self.size)

    def newest(self, n: int) -> torch.Tensor:
        """The newest n images, oldest first: on the device if all are held there, else on the CPU."""
        return self._read(max(0, self.size - n), self.size)

    def _read(self, start: int, stop: int) -> torch.Tensor:
        """Images start..stop-1 in logical (oldest-first) order, from whichever tiers hold them."""
        split = self.on_device
        if stop <= split:
            return self._storage[start:stop]
        parts = [self._storage[start:split].cpu()] if start < split else []
        parts.append(self._spill.read(max(0, start - split), stop - split))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _chunk(self) -> int:
        return max(1, CHUNK_BYTES // bank_bytes(1, self.image_shape))

    def add(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"the bank stores uint8 images (see fdk.augment.quantize), got {images.dtype}")
        if self._storage is None:
            self._storage = torch.empty((0, *images.shape[1:]), dtype=torch.uint8, device=self.device)
        room = len(images) if self.device_images is None else max(0, self.device_images - self.on_device)
        head, tail = images[:room].to(self.device), images[room:]
        start, needed = self.on_device, self.on_device + len(head)
        if needed > len(self._storage):
            allocated = max(needed, 2 * len(self._storage))
            if self.device_images is not None:
                allocated = min(allocated, self.device_images)
            grown = torch.empty((allocated, *images.shape[1:]), dtype=torch.uint8, device=self.device)
            grown[:start] = self._storage[:start]
            self._storage = grown
        self._storage[start:needed] = head
        if len(tail):
            if self._spill is None:
                self._spill = make_spill(self.spill, self.spill_file)
            self._spill.append(tail.cpu())
        self.size, self.total = self.size + len(images), self.total + len(images)
        if self.capacity is not None and self.size > self.capacity:  # drop the oldest (device-only banks)
            drop = self.size - self.capacity
            self._storage[: self.capacity] = self._storage[drop : self.size].clone()
            self.size = self.capacity
        self._order, self._cursor = None, 0  # upstream rebuilt its DataLoader after every synthesis call

    def sample(self, batch_size: int) -> torch.Tensor:
        """The next batch of a shuffled pass (uint8, on the device); like a DataLoader, a pass's last batch may
        be short. The pass is drawn on the device while nothing spilled (the device-only stream), on the CPU
        once something has: the host then knows which spilled images to gather without waiting for the device."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty bank")
        if self._order is None or self._cursor >= self.size:
            self._order = torch.randperm(self.size, device=self._order_device())
            self._cursor = 0
        index = self._order[self._cursor : self._cursor + batch_size]
        self._cursor += len(index)
        return self._storage[index] if not self.spilled else self._gather(index)

    def _order_device(self) -> torch.device:
        return torch.device("cpu") if self.spilled else self.device

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """The images at CPU `index`, in its order: the device part gathered on the device, the spilled part
        with one sorted gather on the host and one copy, each written back to its positions in the batch."""
        split = self.on_device
        held = index < split
        device_pos, spill_pos = held.nonzero().squeeze(1), (~held).nonzero().squeeze(1)
        spill_index, by_offset = (index[spill_pos] - split).sort()  # sorted reads: forward through a memmap
        staged = torch.empty((len(spill_index), *self.image_shape), dtype=torch.uint8, pin_memory=self._pin)
        self._spill.gather(spill_index, staged)
        moves = self._to_device(torch.cat([spill_pos[by_offset], device_pos, index[device_pos]]))
        batch = torch.empty((len(index), *self.image_shape), dtype=torch.uint8, device=self.device)
        batch[moves[: len(spill_pos)]] = self._to_device(staged)
        batch[moves[len(spill_pos) : len(index)]] = self._storage[moves[len(index) :]]
        return batch

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self._pin and not x.is_pinned():
            x = x.pin_memory()
        return x.to(self.device, non_blocking=self._pin)

    def kd_batch(self, batch_size: int, mean, std, memory_format=torch.contiguous_format, augment=crop_flip):
        """A KD batch: sampled, augmented with the dataset's train transform (`augment`, on [0, 1] floats; the
        default is CIFAR's crop pad 4 + flip, an ImageNet run passes its RandomResizedCrop), normalised."""
        x = augment(to_unit(self.sample(batch_size)))
        return normalize(x, mean, std).contiguous(memory_format=memory_format)

    def memory(self) -> dict:
        """Bytes allocated per tier: {'device', 'host', 'disk'}. Tiers grow by doubling, so a tier may hold up to
        twice its images' bytes; a CPU 'device' is host memory too."""
        spilled = 0 if self._spill is None else self._spill.nbytes
        return {
            "device": 0 if self._storage is None else self._storage.numel(),
            "host": spilled if self.spill == "host" else 0,
            "disk": spilled if self.spill == "disk" else 0,
        }

    def close(self) -> None:
        """Frees both tiers and removes a temporary spill file; the bank is empty afterwards."""
        if self._spill is not None:
            self._spill.close()
        self._storage, self._spill, self.size, self._order, self._cursor = None, None, 0, None, 0

    def state_dict(self) -> dict:
        """The bank's state. With a file, first appends the images added since the last call to it and
        stores only counts; without one, the images themselves."""
        state = {"size": self.size, "total": self.total, "order": self._order, "cursor": self._cursor}
        if self.size == 0:
            return {**state, "images": torch.empty(0, dtype=torch.uint8)}
        if self.file is None:
            images = self.images
            return {**state, "images": images if self.spilled else images.cpu().clone()}
        self._flush()
        return {**state, "image_shape": list(self.image_shape)}

    def _flush(self) -> None:
        """Write images _flushed..total-1 at their offsets, a chunk at a time from whichever tier holds them;
        earlier bytes are never rewritten. A failed write (a full disk) leaves the file as the last
        checkpoint counted it and raises WriteFailed with the bytes needed."""
        per_image, chunk = bank_bytes(1, self.image_shape), self._chunk()
        first_kept = self.total - self.size  # global index of the oldest kept image
        dropped = max(0, first_kept - self._flushed)  # added and dropped (capacity) before any flush
        starts = range(max(0, self._flushed - first_kept), self.size, chunk)
        chunks = (self._read(s, min(s + chunk, self.size)).contiguous().cpu().numpy() for s in starts)
        placeholders = [bytes(dropped * per_image)] if dropped else []  # resume never reads them
        size = (self.total - self._flushed) * per_image
        write_at(self.file, self._flushed * per_image, itertools.chain(placeholders, chunks), size)
        self._flushed = self.total

    def load_state_dict(self, state: dict) -> None:
        """Restores a state into this bank's own tiers (device_images and spill come from the constructor);
        a file-backed state is read back a chunk at a time, so resuming needs no second copy of the bank."""
        self.close()
        self.total, self._flushed = 0, 0
        if "images" in state:
            if len(state["images"]):
                self.add(state["images"])
        else:
            self._load_file(state)
        self.size, self.total = state["size"], state["total"]
        self._flushed = state["total"] if "images" not in state else 0
        order = state["order"]
        self._order = None if order is None else order.to(self._order_device())
        self._cursor = state["cursor"]

    def _load_file(self, state: dict) -> None:
        shape, size = tuple(state["image_shape"]), state["size"]
        per_image, start = bank_bytes(1, shape), state["total"] - size
        held = self.file.stat().st_size // per_image if self.file.exists() else 0
        if min(held, state["total"]) - start < size:
            raise FdkError(
                f"{self.file} holds {max(0, held - start)} of the checkpoint's {size} images: "
                "the bank file is truncated; the run cannot be resumed from this folder"
            )
        chunk = max(1, CHUNK_BYTES // per_image)
        with open(self.file, "rb") as f:
            f.seek(start * per_image)
            for done in range(0, size, chunk):
                images = torch.empty((min(chunk, size - done), *shape), dtype=torch.uint8)
                f.readinto(images.numpy().reshape(-1))
                self.add(images)

    def save_grid(self, path, n: int = 64, nrow: int = 8, newest: bool = True) -> Path:
        """A PNG grid of n images (the newest by default), for inspection; reads only those n."""
        from torchvision.utils import save_image

        images = self.newest(n) if newest else self._read(0, min(n, self.size))
        buffer = io.BytesIO()
        save_image(to_unit(images.cpu()), buffer, format="png", nrow=nrow, padding=1)
        atomic_write(path, buffer.getvalue())
        return Path(path)

    def export_png(self, folder) -> int:
        """Every image as `{index}.png` (upstream's pool layout), e.g. for other tools, a chunk at a time;
        returns the count."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        chunk = self._chunk() if self.size else 1
        for start in range(0, self.size, chunk):
            images = self._read(start, min(start + chunk, self.size)).permute(0, 2, 3, 1).cpu().numpy()
            for i, image in enumerate(images, start):
                Image.fromarray(image).save(folder / f"{i}.png")
        return self.size


def read_bank_file(path, total: int, size: int, image_shape) -> torch.Tensor:
    """The images a finished run's bank held: the last `size` of the first `total` in its bank file."""
    bank = SyntheticBank(file=path)
    bank.load_state_dict({"size": size, "total": total, "order": None, "cursor": 0, "image_shape": image_shape})
    return bank.images
