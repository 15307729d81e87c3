"""The KD step of distillation (docs/method.md §4.3): one SGD step of the student on a bank batch.

    x ~ bank (augmented with the dataset's train view, normalised)
    loss = T²·KL(T(x)/T || S(x)/T)   (DFAD: L1 between the logits; ZSKT adds beta · attention transfer)
    SGD step on the student

`fdk.distill` runs it kd_steps times after every synthesis call; benchmarks and `fdk.cost` time it alone.
"""

import torch

from fdk.attention import attention_loss, recorded
from fdk.augment import crop_flip
from fdk.inputs import InputSpec
from fdk.losses import kd_loss, l1_logit_loss
from fdk.utils import autocast


def kd_phase(cfg, teacher, student, optimizer, bank, inputs: InputSpec, memory_format, augment=crop_flip,
             attention=None) -> torch.Tensor:  # fmt: skip
    """kd_steps KD steps (§4.3); returns the summed KD loss (a device scalar: no sync)."""
    total = torch.zeros((), device=next(student.parameters()).device)
    for _ in range(cfg.kd_steps):
        total += kd_step(cfg, teacher, student, optimizer, bank, inputs, memory_format, augment, attention)
    return total


def kd_step(cfg, teacher, student, optimizer, bank, inputs: InputSpec, memory_format, augment=crop_flip,
            attention=None) -> torch.Tensor:  # fmt: skip
    """One SGD step of the student on T²·KL(T(x) || S(x)) for a bank batch x (§4.3); returns the loss
    (a detached device scalar: no sync).
    bank: the bank, or a generator baseline's synthesizer (fresh batches, §15); anything with kd_batch().
    augment: the dataset's train view of the bank images (CIFAR: crop_flip; ImageNet: resized_crop, §13).
    attention: (teacher stages, student stages) for ZSKT's attention transfer, weighted by cfg.w_at."""
    student.train()
    x = bank.kd_batch(cfg.kd_batch_size, inputs.mean, inputs.std, memory_format, augment=augment)
    with recorded(attention[0] if attention else []) as t_maps, recorded(attention[1] if attention else []) as s_maps:
        with autocast(x.device, cfg.amp):
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
    loss = kd_loss(s.float(), t.float(), cfg.T) if cfg.kd_loss == "kl" else l1_logit_loss(s.float(), t.float())
    if attention:
        loss = loss + cfg.w_at * attention_loss(s_maps, t_maps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
