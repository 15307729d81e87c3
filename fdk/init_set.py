"""A pre-synthesised initial set joined to the bank before the first epoch (upstream's `--cmi_init`, §13).

Upstream's ImageNet runs trained on everything they synthesised plus an unreleased folder of images made
beforehand; the paper's "6.28 h" most likely counts only that folder's synthesis (docs/method.md §13).
fdk keeps both costs apart: a run started with `init_bank=DIR` reports the initial set's images and,
when DIR is an fdk run folder, its synthesis hours (`init_images`, `init_synth_hours`) next to its own
in-loop `synth_hours`.

    init_bank=runs/imagenet-init      a finished fdk run folder: its bank.u8 and its summary's synth_hours
    init_bank=path/to/pngs            any folder of images (PNG/JPEG) of the teacher's input size; hours unknown
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fdk.bank import read_bank_file
from fdk.utils import FdkError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_init_set(path, image_size: int, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, int, float | None]:
    """(this rank's images uint8 (n, 3, S, S), the set's size N, its synthesis hours or None); under torchrun
    each rank takes every world_size-th image from `rank` on, so the ranks' banks share it out (§14)."""
    path = Path(path).expanduser()
    if (path / "run.json").exists():
        images, hours = _from_run(path)
    elif path.is_dir():
        images, hours = _from_images(path), None
    else:
        raise FdkError(f"init_bank={path}: not a folder; give an fdk run folder or a folder of images")
    if tuple(images.shape[1:]) != (3, image_size, image_size):
        raise FdkError(f"init_bank={path}: images are {tuple(images.shape[1:])}, the teacher takes "
                       f"(3, {image_size}, {image_size}); resize them first or use a run of this teacher")  # fmt: skip
    return images[rank::world_size], len(images), hours


def _from_run(folder: Path) -> tuple[torch.Tensor, float | None]:
    lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").exists() else []
    ends = [json.loads(line) for line in lines if '"event": "end"' in line]
    if not ends or not (folder / "bank.u8").exists():
        raise FdkError(f"init_bank={folder}: the run has not finished (no end record or bank.u8); finish or resume it")
    end = ends[-1]
    images = read_bank_file(folder / "bank.u8", end["bank_total"], end["bank_size"], end["image_shape"])
    return images, end.get("synth_hours")


def _from_images(folder: Path) -> torch.Tensor:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FdkError(f"init_bank={folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found; check the path")
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if len({a.shape for a in arrays}) > 1:
        raise FdkError(f"init_bank={folder}: images of different sizes; resize them to the teacher's input size")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
