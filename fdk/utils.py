"""Small runtime helpers shared by every part of fdk: devices, precision, seeding, RNG state, logs."""

import contextlib
import json
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository (fdk is installed editable)


class FdkError(Exception):
    """A problem with the user's input; the CLI prints it as one line and exits non-zero."""


def resolve_device(preference: str | torch.device = "auto") -> torch.device:
    """'auto' picks the current accelerator (CUDA, MPS, ...) when there is one, else the CPU."""
    if isinstance(preference, torch.device):
        return preference
    if preference == "auto":
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FdkError(f"device {preference!r} asked for, but CUDA is not available here; use --device cpu")
    return device


def autocast(device: torch.device, amp: str = "auto"):
    """bf16 autocast on accelerators ('auto'/'bf16'), nothing on CPU or with 'off'.

    bf16 needs no loss scaling; BN-statistics losses cast their inputs to fp32 themselves.
    """
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return contextlib.nullcontext()
    if amp not in ("auto", "bf16"):
        raise FdkError(f"amp must be 'auto', 'bf16' or 'off', got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings measure the work itself."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


class Timer:
    """Accumulates synchronised wall-clock seconds: `with timer: ...` adds the block's duration."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every device


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


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class MetricsLog:
    """Append-only `metrics.jsonl`: one JSON object per line, flushed at once (safe to tail)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after `epoch` (a resumed run rewrites them)."""
        kept = [r for r in self.read() if r.get("epoch", -1) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def machine_info(device: torch.device) -> dict:
    import platform

    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
