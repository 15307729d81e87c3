"""Losses of data-free distillation (docs/method.md §2, §4.3).

All of them treat dim 1 as the class dimension, so dense outputs (B, C, H, W) work unchanged:
per-pixel terms are averaged over B·H·W exactly as per-sample terms are averaged over B.
"""

import torch
import torch.nn.functional as F


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T, summed over classes: shape (B,) or (B, H, W)."""
    log_p_student = F.log_softmax(student_logits / T, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / T, dim=1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Hinton KD: batch-mean KL at temperature T, times T² so gradients keep their scale (upstream KLDiv)."""
    return kl_divergence(student_logits, teacher_logits, T).mean() * T * T


def l1_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's KD loss: mean absolute difference of the logits (every class, sample and pixel)."""
    return (student_logits - teacher_logits).abs().mean()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, ignore_index: int = 255) -> torch.Tensor:
    """Focal loss (1 - p)^gamma * CE, DFAD's segmentation-teacher loss: the mean over ALL pixels, ignored
    ones counting 0, as DFAD's FocalLoss(size_average=True) computes it (docs/method.md §12)."""
    ce = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)
    return ((1 - torch.exp(-ce)) ** gamma * ce).mean()


def one_hot_loss(teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """loss_oh: the teacher should classify a synthetic sample as its sampled target class."""
    return F.cross_entropy(teacher_logits, targets)


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """loss_adv: −KL(T || S) (T = 1) on samples where student and teacher agree on the top-1 class.

    Minimising it pushes the generator towards samples the student gets wrong ("decision adversarial"
    distillation from CMI). Disagreeing samples count as 0 and the mean is over the FULL batch (docs/method.md §2.3).
    """
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -(kl_divergence(student_logits, teacher_logits) * agree).mean()


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence between student and teacher at temperature T, batch mean, as upstream's
    DeepInversion baseline computes it (probabilities clipped to [0.01, 0.99]; docs/method.md §2.3)."""
    p = F.softmax(student_logits / T, dim=1)
    q = F.softmax(teacher_logits / T, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    # F.kl_div(log a, b) = Σ b (log b − log a), summed over classes, mean over the batch
    kl_pm = (m * (m.log() - p.log())).sum(1).mean()
    kl_qm = (m * (m.log() - q.log())).sum(1).mean()
    return 0.5 * kl_pm + 0.5 * kl_qm


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL's activation term: −mean |f| of the teacher's penultimate features (real images excite it)."""
    return -features.abs().mean()


def balance_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information-entropy (DFQ's class-balance) term: Σ p̄ log p̄ of the batch-mean prediction p̄.
    Minimising it maximises the entropy of p̄: the batch covers the classes evenly."""
    p = F.softmax(teacher_logits, dim=1).mean(0)
    return (p * torch.log(p)).sum()


def kl_adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """ZSKT's, DFQ's and DAFL's generator term: −KL(T || S) at T = 1, batch mean, every sample counted."""
    return -kl_divergence(student_logits, teacher_logits).mean()


def dfad_adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's generator term: −log(1 + mean |S − T|), the logit discrepancy the student is trained to close."""
    return -torch.log1p(l1_logit_loss(student_logits, teacher_logits))


def contrastive_loss(local: torch.Tensor, global_: torch.Tensor, batch: int, T: float) -> torch.Tensor:
    """CMI's loss_cr: InfoNCE of each projected local view against all projected global views at temperature T.

    local, global_: (N, d) L2-normalised projections, the first `batch` rows from this batch and the rest
    from the memory of earlier batches (negatives); row i's positive is column i. The global side is
    detached (a fixed target). The two groups are averaged separately when there are negatives.
    """
    logits = local @ global_.detach().T / T
    ce = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
    if len(ce) > batch:
        return ce[:batch].mean() + ce[batch:].mean()
    return ce.mean()
