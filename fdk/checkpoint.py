"""File I/O for weights and checkpoints: atomic writes, `weights_only=True` loading, safetensors metadata.

Nothing here knows about models: `fdk.models.load_model` builds the network and checks the fit.
Every failure is an `FdkError` that names the file, what is wrong and what to do.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from fdk.utils import FdkError

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
# numpy scalars appear in some older checkpoints (e.g. a numpy best_acc1); they are plain data.
_NUMPY_SAFE = [np._core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32"))]


class WriteFailed(FdkError):
    """Writing a file failed (a full disk, an I/O error): the message names the file, the error and the
    space it needed; the file's previous content is kept (docs/method.md §8)."""


def _write(f, data) -> None:
    """Every byte fdk writes to a run folder goes through here (tests inject failures at chosen bytes).
    f is unbuffered: a short write is continued, a failed one raises at once and leaves nothing pending."""
    view = memoryview(data).cast("B")
    while len(view):
        view = view[f.write(view) :]


def atomic_write(path, data) -> None:
    """Write `data` (bytes, or a function write(tmp) that writes a file) to a temporary file in the same
    folder, flush it to the disk, then rename it to path.

    A crash, an interrupt or a full disk never leaves half a file: path holds the old or the new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb", buffering=0) as f:
                _write(f, data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on the disk before the rename makes them the file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as error:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        needed = written if callable(data) else len(data)
        raise write_failed(path, error, needed, at_least=callable(data)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_at(path, offset: int, chunks, size: int) -> None:
    """Write `chunks` (bytes-like, `size` bytes in all) into path at byte `offset`, dropping what followed:
    the bank file's and metrics.jsonl's appends. A failed write is cut back to `offset`, so the file holds
    exactly what it held before the call up to there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "r+b" if path.exists() else "wb", buffering=0) as f:
            try:
                f.truncate(offset)
                f.seek(offset)
                for chunk in chunks:
                    _write(f, chunk)
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(offset)  # frees what the failed write took (truncating needs no space)
                raise
    except OSError as error:
        raise write_failed(path, error, size) from None


def write_failed(path, error: OSError, needed: int, at_least: bool = False) -> WriteFailed:
    try:
        free = f", {format_bytes(shutil.disk_usage(Path(path).parent).free)} free there"
    except OSError:
        free = ""
    reason = error.strerror or str(error)
    need = f"{'at least ' if at_least else ''}{format_bytes(needed)}"
    return WriteFailed(f"writing {path} failed: {reason} (errno {error.errno}); it needs {need}{free}")


def format_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def torch_bytes(obj) -> bytes:
    """torch.save into memory: the bytes a checkpoint file will hold, so a failed write knows its size."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_save(obj, path) -> None:
    """torch.save, atomically (streamed to the file: decoded-dataset caches can be gigabytes)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj, path) -> None:
    """Indented JSON, atomically, creating the folder: run.json, reports and benchmark results files."""
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


def load_checkpoint(path) -> dict:
    """torch.load with weights_only=True (numpy scalars allowed), on the CPU."""
    path = Path(path)
    check_file(path, "file")
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
    atomic_write(path, save(tensors, metadata=text))


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
    check_file(path, "weights file")
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


def check_file(path: Path, what: str) -> None:
    """A clear error unless path is a file: a folder given for a file names the files it holds."""
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt"))[:3]
        hint = f", e.g. {path / inside[0]}" if inside else ""
        raise FdkError(f"{what} {path} is a folder, not a file; pass a .safetensors or .pth file{hint}")
    if not path.is_file():
        raise FdkError(f"{what} {path} does not exist; check the path")


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
