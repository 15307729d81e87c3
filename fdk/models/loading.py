"""Load weights into zoo models: a strict fit check with a one-line error that names the likely fix.

`load_model(path)` reads the file (fdk.checkpoint: file I/O only), builds the architecture its metadata
or the caller names, and attaches what the weights say about themselves, the way timm attaches
`pretrained_cfg`: `model.input_spec` (the input contract, docs/method.md §9), `model.arch` and
`model.source_file` (for run records and data_stats lookups).
"""

from pathlib import Path

import torch
import torch.nn as nn

from fdk.checkpoint import load_state_dict_file, read_metadata
from fdk.inputs import InputSpec
from fdk.models.zoo import CIFAR_MODELS, create_model
from fdk.utils import ROOT, FdkError

# The embedded CIFAR-10 teacher: resnet20, trained with `fdk train-teacher --recipe cpu` (weights/README.md).
EMBEDDED_TEACHER = ROOT / "weights" / "cifar10_resnet20.safetensors"
EMBEDDED_SEG_TEACHER = ROOT / "weights" / "cifar_scenes_segnet_small.safetensors"  # docs/method.md §12


def load_weights(model: nn.Module, state: dict, name: str = "model") -> nn.Module:
    """Strict load; a mismatch is one line: missing/unexpected modules, shape clashes, what the file fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"weights do not fit {name}"]
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{label} {len(keys)} keys in modules {_shortlist(_modules(keys))}")
        if mismatched:
            parts.append(f"shape mismatch ({len(mismatched)}): {_shortlist(mismatched, 3)}")
        hint = guess_architecture(state)
        parts.append(f"the file looks like {hint}: pass that architecture" if hint else "is it the right file?")
        raise FdkError("; ".join(parts))
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
    num_classes = head_classes(state)
    if num_classes is None:
        return None
    fits = []
    for arch, build in CIFAR_MODELS.items():
        with torch.device("meta"):  # shapes only: nothing is allocated or initialised
            expected = build(num_classes=num_classes).state_dict()
        if expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in state):
            fits.append(arch)
    if fits:
        return f"{' or '.join(fits)} with num_classes={num_classes}"
    return f"a model with num_classes={num_classes}"


def head_classes(state: dict) -> int | None:
    """The class count of a classifier state dict, read off its head's bias."""
    for head in ("linear.bias", "fc.bias", "classifier.bias", "classifier.1.bias"):
        if head in state and state[head].ndim == 1:
            return int(state[head].shape[0])
    return None


def load_model(path, arch: str | None = None, num_classes: int | None = None, inputs: InputSpec | None = None):
    """Build a zoo model and load weights into it (eval mode).

    arch and num_classes default to the file's metadata (fdk safetensors) or to what its head says;
    `inputs` overrides the input contract stored with the weights (mean/std, image size, classes).
    """
    state = load_state_dict_file(path)
    meta = read_metadata(path)
    arch = arch or meta.get("arch")
    if arch is None:
        hint = guess_architecture(state)
        raise FdkError(f"{path} does not record its architecture; pass --arch (the file looks like {hint})")
    spec = inputs or InputSpec.from_metadata(meta)
    num_classes = num_classes or meta.get("num_classes") or head_classes(state) or (spec.num_classes if spec else 10)
    model = create_model(arch, num_classes)
    load_weights(model, state, name=f"{arch} (num_classes={num_classes})")
    model.arch, model.input_spec, model.source_file = arch, spec, str(Path(path))
    return model.eval()
