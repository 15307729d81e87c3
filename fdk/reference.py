"""Reference students for data-free runs: the same KD on real images, and no training at all.

A data-free student is judged against two others trained by the same recipe (DFAD's Table 3 lines):
KD on the real training images ("KD-ORI", the data-driven reference: what the synthetic images stand in
for) and an untrained student (the floor). `distill_on_images` puts the real images into a bank and runs
distill's own `kd_phase`, so the only difference from a data-free run is where the images come from.
"""

import torch

from fdk.bank import SyntheticBank
from fdk.evaluate import evaluate_task, headline_metric
from fdk.inputs import InputSpec, teacher_inputs
from fdk.kd import kd_phase
from fdk.models import create_model
from fdk.presets import DistillConfig
from fdk.utils import resolve_device, seed_everything


def distill_on_images(
    cfg: DistillConfig, teacher, images: torch.Tensor, test=None, *, inputs: InputSpec | None = None, device="auto"
) -> dict:
    """KD of a new `cfg.student` from `teacher` on real uint8 `images` (N, C, H, W), with the KD part of cfg:
    (epochs - warmup) epochs of ep_steps steps, the cosine schedule, the same augmentation as the bank.
    Returns {'final_<metric>', 'epochs': [per-epoch records], 'student': the model}."""
    device = resolve_device(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    teacher = teacher.to(device, memory_format=memory_format).eval()
    spec = teacher_inputs(teacher, cfg.dataset, inputs)
    metric = headline_metric(spec)
    seed_everything(cfg.seed)
    student = create_model(cfg.student, spec.num_classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_t_max, eta_min=cfg.eta_min)
    bank = SyntheticBank(device)
    bank.add(images)
    records = []
    for epoch in range(cfg.epochs - cfg.warmup):
        record = {"epoch": epoch}
        for _ in range(cfg.calls_per_epoch):
            record["kd_loss"] = kd_phase(cfg, teacher, student, optimizer, bank, spec, memory_format).item()
        scheduler.step()
        if test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs - cfg.warmup - 1):
            record.update({f"test_{k}": v for k, v in evaluate_task(student, test, spec, cfg.amp).items()})
        records.append(record)
    final = records[-1].get(f"test_{metric}") if records else None
    return {f"final_{metric}": final, "epochs": records, "student": student}


def untrained_score(cfg: DistillConfig, test, spec: InputSpec, device="auto") -> dict:
    """The floor: a freshly initialised `cfg.student` (seeded as the runs are) on the test split."""
    seed_everything(cfg.seed)
    student = create_model(cfg.student, spec.num_classes).to(resolve_device(device))
    return evaluate_task(student, test, spec, cfg.amp)
