"""Checkpoint I/O: teacher weights from upstream `.pth` files or safetensors, atomic saves.

Everything loads with `torch.load(weights_only=True)`: upstream checkpoints are plain dicts of
tensors (`{'state_dict': ..., 'best_acc1': ...}`), and a wrong file gets an error that names the
missing, unexpected and mis-shaped keys and, when it can tell, the architecture the file fits.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from fdk.utils import FdkError

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
# numpy scalars appear in some older checkpoints (e.g. a numpy best_acc1); they are plain data.
_NUMPY_SAFE = [np._core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32"))]


def atomic_write(path, write) -> None:
    """Call write(tmp) on a temporary file in the same folder, then rename it to path.

    A crash or interrupt never leaves half a file: path holds the old or the new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path) -> dict:
    """torch.load with weights_only=True (numpy scalars allowed), on the CPU."""
    path = Path(path)
    if not path.exists():
        raise FdkError(f"checkpoint {path} does not exist")
    with torch.serialization.safe_globals(_NUMPY_SAFE):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise FdkError(
                f"cannot load {path} with weights_only=True ({str(error).splitlines()[0]}); "
                f"re-save it as a plain dict of tensors or as .safetensors"
            ) from error


def save_weights(model: torch.nn.Module, path, **metadata) -> None:
    """Model weights as safetensors (atomic), with metadata such as arch, num_classes, dataset, top1."""
    state = {k: v.detach().contiguous().cpu() for k, v in strip_prefixes(model.state_dict()).items()}
    text = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=text))


def read_metadata(path) -> dict:
    """The metadata fdk wrote into a safetensors file ({} for .pth files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    with safe_open(path, "pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt as a bare state dict or under 'state_dict'/'model'."""
    path = Path(path)
    if not path.exists():
        raise FdkError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return strip_prefixes(load_file(path))
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "student"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FdkError(f"{path} holds no state dict: expected a dict of tensors, or one under 'state_dict' or 'model'")
    return strip_prefixes(obj)


def load_weights(model: torch.nn.Module, state: dict, name: str = "model") -> torch.nn.Module:
    """Strict load with a readable error: missing/unexpected keys, shape mismatches, a likely fix."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"weights do not fit {name}:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                lines.append(f"  {label} {len(keys)} keys in modules: {_shortlist(_modules(keys))}")
        if mismatched:
            lines.append(f"  shape mismatch ({len(mismatched)}): {_shortlist(mismatched, 3)}")
        hint = guess_architecture(state)
        if hint:
            lines.append(f"  the file looks like {hint}")
        raise FdkError("\n".join(lines))
    model.load_state_dict(state)
    return model


def _modules(keys: list[str]) -> list[str]:
    """'a.b.weight', 'a.b.bias' -> ['a.b']: one name per module, in order."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def _shortlist(items: list[str], n: int = 6) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def guess_architecture(state: dict) -> str | None:
    """Which zoo model(s) and num_classes a state dict fits exactly, as text, or None."""
    from fdk.models import CIFAR_MODELS

    num_classes = _num_classes(state)
    if num_classes is None:
        return None
    fits = []
    for arch, build in CIFAR_MODELS.items():
        expected = build(num_classes=num_classes).state_dict()
        if expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in state):
            fits.append(arch)
    if fits:
        return f"{' or '.join(fits)} with num_classes={num_classes}"
    return f"a model with num_classes={num_classes}"


def _num_classes(state: dict) -> int | None:
    for head in ("linear.bias", "fc.bias", "classifier.bias", "classifier.1.bias"):
        if head in state and state[head].ndim == 1:
            return int(state[head].shape[0])
    return None


def load_model(path, arch: str | None = None, num_classes: int | None = None) -> torch.nn.Module:
    """Build a zoo model and load weights into it; arch/num_classes default to the file's metadata."""
    from fdk.models import create_model

    state = load_state_dict_file(path)
    meta = read_metadata(path)
    arch = arch or meta.get("arch")
    if arch is None:
        hint = guess_architecture(state)
        raise FdkError(f"{path} does not record its architecture; pass --arch (it looks like {hint})")
    num_classes = num_classes or meta.get("num_classes") or _num_classes(state) or 10
    model = create_model(arch, num_classes)
    return load_weights(model, state, name=f"{arch} (num_classes={num_classes})")
