"""Attention transfer, the student's extra term in ZSKT (Micaelli & Storkey 2019; docs/method.md §15).

A stage's attention map is the mean over channels of its squared activations, flattened and L2-normalised
per sample; the loss is β · Σ over stages of the mean squared difference of the student's and teacher's
maps (β = 250 in ZSKT). It applies where teacher and student have the same number of stages with the same
spatial sizes: the WRN pairs and ResNet-34 → ResNet-18 of the paper's table; not VGG-11 → ResNet-18.
"""

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from fdk.utils import FdkError

STAGE_NAMES = (("block1", "block2", "block3"), ("layer1", "layer2", "layer3", "layer4"))


def stages(model: nn.Module) -> list[nn.Module]:
    """The model's stage modules (WRN blocks, ResNet layers) in order; [] when it has none."""
    modules = dict(model.named_children())
    for names in STAGE_NAMES:
        found = [modules[n] for n in names if n in modules]
        if found:
            return found
    return []


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W): mean over channels of f², L2-normalised per sample."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student_features: list, teacher_features: list) -> torch.Tensor:
    """Σ over stages of mean((a_S − a_T)²)."""
    return sum((attention_map(s) - attention_map(t)).pow(2).mean() for s, t in zip(student_features, teacher_features))


@contextlib.contextmanager
def recorded(modules: list[nn.Module]):
    """`with recorded(stages(model)) as outputs:` collects each module's output of the forwards in the block."""
    outputs, handles = [], [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in modules]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def applies(teacher: nn.Module, student: nn.Module, image_size: int, channels: int = 3) -> bool:
    """True when the two have as many stages with the same spatial sizes (attention maps comparable)."""
    t_stages, s_stages = stages(teacher), stages(student)
    if not t_stages or len(t_stages) != len(s_stages):
        return False
    device = next(teacher.parameters()).device
    probe = torch.zeros(2, channels, image_size, image_size, device=device)
    shapes = []
    for model, modules in ((teacher, t_stages), (student, s_stages)):
        was_training = model.training
        with torch.no_grad(), recorded(modules) as outs:
            model.eval()(probe)
        model.train(was_training)
        shapes.append([tuple(o.shape[2:]) for o in outs])
    return shapes[0] == shapes[1]


def transfer_stages(cfg, teacher: nn.Module, student: nn.Module, inputs) -> tuple[list, list]:
    """(teacher stages, student stages) for a run with cfg.w_at > 0, or a one-line error naming the fix."""
    if not applies(teacher, student, inputs.image_size, len(inputs.mean)):
        raise FdkError(f"w_at={cfg.w_at}: attention transfer needs teacher and student stages of the same number "
                       f"and sizes, which {cfg.teacher} and {cfg.student} do not have; --set w_at=0")  # fmt: skip
    return stages(teacher), stages(student)
