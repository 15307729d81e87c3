"""Small runtime helpers shared by every part of fdk: errors, devices, precision, timing, seeding, RNG state."""

import contextlib
import random
import time
from pathlib import Path

import numpy as np
import torch

VERSION = "0.2.0"
ROOT = Path(__file__).resolve().parents[1]  # the repository (fdk is installed editable)
AMP_MODES = ("off", "bf16", "auto")


class FdkError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with status 2."""


def resolve_device(preference: str | torch.device = "auto") -> torch.device:
    """'auto' picks the current accelerator (CUDA, MPS, ...) when there is one, else the CPU."""
    if isinstance(preference, torch.device):
        return preference
    if preference == "auto":
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise FdkError(f"unknown device {preference!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FdkError(f"device {preference!r} asked for, but CUDA is not available here; use --device cpu")
    return device


def autocast(device: torch.device, amp: str = "off"):
    """Mixed precision for a block: 'off' (fp32, upstream's precision), 'bf16', or 'auto' (bf16 on an
    accelerator, fp32 on the CPU). bf16 needs no loss scaling; the BN-statistics hooks compute in fp32."""
    if amp not in AMP_MODES:
        raise FdkError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings measure the work itself."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


class Timer:
    """Accumulates synchronised wall-clock seconds: `with timer: ...` adds the block's duration."""

    def __init__(self, device: torch.device, seconds: float = 0.0):
        self.device, self.seconds = device, seconds
        self._start = None

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.flush()
        self._start = None

    def flush(self) -> None:
        """Count the running block's seconds so far (a checkpoint written inside it must hold them)."""
        if self._start is not None:
            synchronize(self.device)
            now = time.perf_counter()
            self.seconds, self._start = self.seconds + now - self._start, now


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every device


@contextlib.contextmanager
def rng_restored(seed: int | None = None):
    """Run a block and put every torch RNG (CPU and all CUDA devices) back as it was; with a seed,
    the block draws from that seed instead of the current state."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def rng_state() -> dict:
    """Every RNG fdk draws from, as tensors and plain types (loadable with weights_only=True)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_plain(random.getstate()),
        "numpy": _to_plain(np.random.get_state(legacy=False)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value):
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
