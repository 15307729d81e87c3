"""File I/O for weights and checkpoints: atomic writes, `weights_only=True` loading, safetensors metadata.

Nothing here knows about models: `fdk.models.load_model` builds the network and checks the fit.
Every failure is an `FdkError` that names the file, what is wrong and what to do.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
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


def write_json(obj, path) -> None:
    """Indented JSON, atomically, creating the folder: run.json, reports and benchmark results files."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1) + "\n"))


def load_checkpoint(path) -> dict:
    """torch.load with weights_only=True (numpy scalars allowed), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FdkError(f"file {path} does not exist; check the path")
    with torch.serialization.safe_globals(_NUMPY_SAFE):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            text = str(error)
            if "WeightsUnpickler error:" in text:  # torch's own advice around it does not apply here
                text = text.split("WeightsUnpickler error:", 1)[1]
            first = " ".join(text.split(". Please use")[0].split()) or type(error).__name__
            if "Unsupported global" in str(error):  # a readable pickle, but of arbitrary objects
                raise FdkError(
                    f"{path} holds pickled Python objects that weights_only=True refuses ({first}); "
                    "re-save it as a plain dict of tensors, or as .safetensors"
                ) from None
            raise FdkError(
                f"{path} is not a readable PyTorch file, probably truncated or corrupt ({first}); "
                "copy or download it again"
            ) from None


def save_weights(state: dict[str, torch.Tensor], path, **metadata) -> None:
    """A state dict as safetensors (atomic), with JSON metadata such as arch, num_classes, mean, std."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in strip_prefixes(state).items()}
    text = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=text))


def read_metadata(path) -> dict:
    """The metadata fdk wrote into a safetensors file ({} for .pth files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(path, "pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise _corrupt_safetensors(path, error) from None
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
    if not path.is_file():
        raise FdkError(f"weights file {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return strip_prefixes(load_file(path))
        except (SafetensorError, OSError) as error:
            raise _corrupt_safetensors(path, error) from None
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "student"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FdkError(
            f"{path} holds no state dict: expected a dict of tensors, or one under 'state_dict' or 'model'; "
            "save model.state_dict() into it"
        )
    return strip_prefixes(obj)


def _corrupt_safetensors(path: Path, error: Exception) -> FdkError:
    return FdkError(
        f"{path} is not a readable safetensors file, probably truncated or corrupt ({error}); copy it again"
    )


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
