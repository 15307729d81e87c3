"""Measurements of models and synthetic batches: accuracy on a real split, agreement, batch metrics."""

import torch
import torch.nn.functional as F

from fdk.augment import normalize, to_unit
from fdk.data import ImageTensors, batches
from fdk.hooks import bn_statistics_loss
from fdk.inputs import InputSpec
from fdk.losses import kl_divergence
from fdk.segmetrics import evaluate_segmentation
from fdk.utils import autocast


def headline_metric(spec: InputSpec) -> str:
    """The number a run is judged by: top-1 accuracy, or mean IoU for segmentation."""
    return "miou" if spec.dense else "top1"


def evaluate_task(model: torch.nn.Module, data, spec: InputSpec, amp: str = "off") -> dict:
    """`evaluate` for classifiers, `evaluate_segmentation` (mIoU, pixel accuracy, per-class IoU) for dense models."""
    if spec.dense:
        return evaluate_segmentation(model, data, spec.mean, spec.std, spec.num_classes, spec.ignore_index, amp=amp)
    return evaluate(model, data, spec.mean, spec.std, amp=amp)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ImageTensors, mean, std, batch_size: int = 500, amp: str = "off") -> dict:
    """{'top1', 'top5' (percent), 'loss' (mean CE)} of `model` on `data` (on the model's device)."""
    device = next(model.parameters()).device
    data = data.to(device)
    was_training = model.training
    model.eval()
    correct1, correct5, loss = (torch.zeros((), device=device) for _ in range(3))
    k = min(5, len(data.classes))
    for x, y in batches(data, batch_size, mean, std):
        with autocast(device, amp):
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        top = logits.topk(k, dim=1).indices  # (B, k)
        correct1 += (top[:, 0] == y).sum()
        correct5 += (top == y[:, None]).any(1).sum()
    model.train(was_training)
    n = len(data)
    return {
        "top1": 100.0 * correct1.item() / n,
        "top5": 100.0 * correct5.item() / n,
        "loss": loss.item() / n,
    }


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits for already-normalised images, in batches, in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def normalized(images: torch.Tensor, model: torch.nn.Module, mean, std) -> torch.Tensor:
    """uint8 images -> normalised floats on the model's device."""
    return normalize(to_unit(images.to(next(model.parameters()).device)), mean, std)


@torch.no_grad()
def agreement(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, mean, std) -> float:
    """Top-1 agreement (%) of student and teacher on uint8 images (e.g. held-out synthetic ones)."""
    return heldout_metrics(student, teacher, images, mean, std)["agreement_new"]


@torch.no_grad()
def heldout_metrics(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, mean, std) -> dict:
    """On uint8 images the student has not trained on: its top-1 agreement (%) with the teacher, and the
    effective number of classes the teacher sees in them, exp(entropy of its top-1 class histogram; over
    pixels for segmentation): 1 for a batch of one class, C for a balanced one. A generator that collapsed
    onto one class gives about 1 (docs/method.md §15)."""
    x = normalized(images, teacher, mean, std)
    t = predict(teacher, x).argmax(1)
    same = predict(student, x).argmax(1) == t
    p = t.flatten().bincount().float()
    p = p[p > 0] / p.sum()
    return {"agreement_new": 100.0 * same.float().mean().item(), "classes_new": (-(p * p.log()).sum()).exp().item()}


@torch.no_grad()
def teacher_predictions(teacher, images: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, confidence) of the teacher for uint8 images, on the CPU."""
    probs = predict(teacher, normalized(images, teacher, mean, std)).float().softmax(1)
    confidence, predicted = probs.max(1)
    return predicted.cpu(), confidence.cpu()


def batch_metrics(teacher, images: torch.Tensor, targets: torch.Tensor, mean, std, student=None) -> dict:
    """What a synthetic batch is like, seen by the teacher (and the student): the plain BN loss, how often
    the teacher sees the sampled class, its mean confidence, and how far the student is from the teacher
    on it (top-1 agreement, and the mean KL(T || S) that the adversarial term pushes up)."""
    x = normalized(images, teacher, mean, std)
    predicted, confidence = teacher_predictions(teacher, images, mean, std)
    row = {
        "loss_bn": bn_statistics_loss(teacher, x),
        "teacher hits target class %": 100 * (predicted == targets.cpu()).float().mean().item(),
        "mean teacher confidence %": 100 * confidence.mean().item(),
    }
    if student is not None:
        row["student agrees with teacher %"] = agreement(student, teacher, images, mean, std)
        row["KL(teacher || student)"] = kl_divergence(predict(student, x), predict(teacher, x)).mean().item()
    return row


def heldout_agreement(result, teacher: torch.nn.Module, batches: int = 2) -> float:
    """Student-teacher top-1 agreement (%) on fresh synthetic batches that never entered the bank.

    They come from `synthesizer.sample()`, which changes nothing in the run (§4.4), without the
    adversarial term, so they show the synthetic distribution itself rather than the student's mistakes.
    """
    synthesizer = result.synthesizer
    images = torch.cat([synthesizer.sample(seed=i).images for i in range(batches)])
    return agreement(result.student, teacher, images, synthesizer.inputs.mean, synthesizer.inputs.std)
