"""Segmentation metrics: mIoU, pixel accuracy and per-class IoU from one confusion matrix (docs/method.md §12).

The confusion matrix is torchmetrics' (pixels labelled `ignore_index` left out), accumulated on the
device over the whole split; the scores are derived from it as upstream's `StreamSegMetrics` derives
them: IoU_c = TP_c / (TP_c + FP_c + FN_c), and the mean IoU skips classes that appear in neither the
labels nor the predictions (0/0), instead of counting them as 0.
"""

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_confusion_matrix

from fdk.augment import normalize, to_unit
from fdk.utils import autocast


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """(C, C) int64 counts, rows = true class, columns = predicted class, for logits (B, C, H, W)."""
    return multiclass_confusion_matrix(
        logits.argmax(1), labels.long(), num_classes, ignore_index=ignore_index, validate_args=False
    )


def scores(confusion: torch.Tensor) -> dict:
    """mIoU (%), pixel accuracy (%) and the per-class IoU list (%, None where a class never occurs)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive  # TP + FP + FN per class
    iou = true_positive / union  # NaN for 0/0: the class is absent from labels and predictions
    return {
        "miou": 100.0 * iou.nanmean().item(),
        "pixel_acc": 100.0 * (true_positive.sum() / confusion.sum().clamp_min(1)).item(),
        "iou": [None if v != v else 100.0 * v for v in iou.tolist()],
    }


@torch.no_grad()
def evaluate_segmentation(model, data, mean, std, num_classes: int, ignore_index: int = 255,
                          batch_size: int = 16, amp: str = "off") -> dict:  # fmt: skip
    """{'miou', 'pixel_acc', 'iou' (per class), 'loss' (mean per-pixel CE)} of `model` on a SegTensors split,
    full images (no crop), on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss, pixels = torch.zeros((), device=device), torch.zeros((), device=device)
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        labels = data.masks[start : start + batch_size].to(device).long()
        with autocast(device, amp):
            logits = model(normalize(to_unit(images), mean, std)).float()
        confusion += confusion_matrix(logits, labels, num_classes, ignore_index)
        loss += F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
        pixels += (labels != ignore_index).sum()
    model.train(was_training)
    return {**scores(confusion), "loss": (loss / pixels.clamp_min(1)).item()}
