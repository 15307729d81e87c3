"""Data-free distillation: the outer loop of FastDFKD (reference doc §1.8-1.10).

    for epoch in range(epochs):
        for _ in range(ep_steps // kd_steps):           # one call in every CIFAR preset
            images = synthesizer.synthesize(student)     # timed: the paper's "synthesis time" (§3.5)
            bank.add(images)                             # uint8, on the device
            if epoch >= warmup:
                kd_steps x [x ~ bank, augmented; SGD step on KL(T(x) || S(x)) at temperature T, x T²]
        if epoch >= warmup: cosine.step()                # T_max = 200 KD epochs, eta_min 2e-4
        evaluate on the real test split (when given); log; checkpoint (everything, atomically)

Synthesis, KD and evaluation time are measured separately with device synchronisation.
"""

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fdk.bank import SyntheticBank
from fdk.checkpoint import atomic_save, load_checkpoint, save_weights
from fdk.config import from_dict, to_dict
from fdk.data import ImageTensors, dataset_info
from fdk.evaluate import agreement, evaluate
from fdk.losses import kd_loss
from fdk.models import create_model
from fdk.presets import DistillConfig
from fdk.synthesis import make_synthesizer
from fdk.utils import (
    FdkError,
    MetricsLog,
    Timer,
    autocast,
    git_commit,
    machine_info,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)

CHECKPOINT = "checkpoint.pt"


def distill(
    cfg: DistillConfig,
    teacher: torch.nn.Module,
    test: ImageTensors | None = None,
    out_dir=None,
    device="auto",
    resume: bool = False,
    progress: bool = True,
    on_epoch=None,
    stop_after_epoch: int | None = None,
) -> dict:
    """Distil `teacher` into a new `cfg.student` without data; returns the run's summary.

    test: a real test split for per-epoch evaluation (optional). out_dir: where metrics.jsonl, the
    per-epoch checkpoint, samples.png and student.safetensors go (None: nothing is written).
    resume: continue from out_dir/checkpoint.pt (its config wins). on_epoch(record): called after each
    epoch with the logged record (live plots). stop_after_epoch: end early, as if interrupted (tests).
    """
    device = resolve_device(device)
    out_dir = Path(out_dir) if out_dir is not None else None
    state = _load_resume_state(out_dir) if resume else None
    if state is not None:
        cfg = from_dict(DistillConfig, state["config"])
    info = dataset_info(cfg.dataset)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    seed_everything(cfg.seed)
    teacher = teacher.to(device, memory_format=memory_format).eval()
    student = create_model(cfg.student, info.num_classes).to(device, memory_format=memory_format)
    synthesizer = make_synthesizer(cfg, teacher, info.num_classes, info.mean, info.std, info.image_size)
    bank = SyntheticBank(device, cfg.bank_capacity)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_t_max, eta_min=cfg.eta_min)
    kd_teacher, kd_student = (torch.compile(teacher), torch.compile(student)) if cfg.compile else (teacher, student)
    test = test.to(device) if test is not None else None

    timers = {name: Timer(device) for name in ("synth", "kd", "eval")}
    summary = {"best_top1": None, "best_epoch": None, "final_top1": None, "wall_seconds": 0.0}
    log = MetricsLog(out_dir / "metrics.jsonl") if out_dir else None
    start_epoch = 0
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        synthesizer.load_state_dict(state["synthesizer"])
        bank.load_state_dict(state["bank"])
        for name, seconds in state["seconds"].items():
            timers[name].seconds = seconds
        summary = state["summary"]
        start_epoch = state["epoch"] + 1
        set_rng_state(state["rng"])
        log.truncate_after(state["epoch"])
    elif log:
        log.path.unlink(missing_ok=True)
        log.write(event="start", config=to_dict(cfg), commit=git_commit(), **machine_info(device))

    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        kd_loss_sum, kd_iterations = torch.zeros((), device=device), 0
        record = {"epoch": epoch}
        for call in range(cfg.ep_steps // cfg.kd_steps):
            with timers["synth"]:
                out = synthesizer.synthesize(student)
            if call == 0:  # the student has not trained on this batch yet: a held-out check
                record["agreement_new"] = agreement(student, teacher, out.images, info.mean, info.std)
                record.update({k: v.item() for k, v in out.terms.items()})
                record["synth_loss"] = out.step_losses[-1].item()
            bank.add(out.images)
            if epoch >= cfg.warmup:
                with timers["kd"]:
                    kd_loss_sum += _kd_phase(cfg, kd_teacher, kd_student, optimizer, bank, info, memory_format)
                kd_iterations += cfg.kd_steps
        if epoch >= cfg.warmup:
            scheduler.step()  # once per KD epoch (§1.8)
        kd_loss_mean = kd_loss_sum.item() / max(1, kd_iterations)
        if not (math.isfinite(kd_loss_mean) and math.isfinite(record["synth_loss"])):
            where = f"{out_dir / CHECKPOINT}" if out_dir else "no checkpoint (out_dir=None)"
            raise FdkError(
                f"loss became non-finite in epoch {epoch} (KD {kd_loss_mean}, synthesis {record['synth_loss']}); "
                f"stopped, last good state kept: {where}. Try a lower lr or lr_gen, or amp=off"
            )
        if test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs - 1):
            with timers["eval"]:
                record.update({f"test_{k}": v for k, v in evaluate(student, test, info.mean, info.std).items()})
            summary["final_top1"] = record["test_top1"]
            if summary["best_top1"] is None or record["test_top1"] > summary["best_top1"]:
                summary["best_top1"], summary["best_epoch"] = record["test_top1"], epoch
        summary["wall_seconds"] += time.perf_counter() - started
        record.update(
            kd_loss=kd_loss_mean if kd_iterations else None,
            lr=optimizer.param_groups[0]["lr"],
            bank_size=len(bank),
            synth_seconds=timers["synth"].seconds,
            kd_seconds=timers["kd"].seconds,
            eval_seconds=timers["eval"].seconds,
            wall_seconds=summary["wall_seconds"],
        )
        if log:
            log.write(**record)
            _save(out_dir, cfg, epoch, student, optimizer, scheduler, synthesizer, bank, timers, summary)
        bar.set_postfix({k: f"{record[k]:.2f}" for k in ("test_top1", "agreement_new") if k in record})
        if on_epoch is not None:
            on_epoch(record)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    bar.close()

    summary.update(
        epochs=cfg.epochs,
        images_synthesized=synthesizer.calls * cfg.synth_batch_size,
        synth_seconds=timers["synth"].seconds,
        synth_gpu_hours=timers["synth"].seconds / 3600,
        kd_seconds=timers["kd"].seconds,
        eval_seconds=timers["eval"].seconds,
    )
    if out_dir and (stop_after_epoch is None or epoch == cfg.epochs - 1):
        bank.save_grid(out_dir / "samples.png")
        save_weights(
            student,
            out_dir / "student.safetensors",
            arch=cfg.student,
            num_classes=info.num_classes,
            dataset=cfg.dataset,
            test_top1=summary["final_top1"],
            config=to_dict(cfg),
        )
    return {**summary, "student": student, "bank": bank, "synthesizer": synthesizer}


def _kd_phase(cfg, teacher, student, optimizer, bank, info, memory_format) -> torch.Tensor:
    """kd_steps SGD steps on bank batches; returns the summed KD loss (a device scalar: no sync)."""
    student.train()
    total = None
    for _ in range(cfg.kd_steps):
        x = bank.kd_batch(cfg.kd_batch_size, info.mean, info.std, memory_format)
        with autocast(x.device, cfg.amp):
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
        loss = kd_loss(s.float(), t.float(), cfg.T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def _load_resume_state(out_dir: Path | None) -> dict:
    if out_dir is None or not (out_dir / CHECKPOINT).exists():
        raise FdkError(f"cannot resume: no {CHECKPOINT} in {out_dir}; start the run without --resume")
    return load_checkpoint(out_dir / CHECKPOINT)


def _save(out_dir, cfg, epoch, student, optimizer, scheduler, synthesizer, bank, timers, summary) -> None:
    """Everything needed to continue exactly where this epoch ended, written atomically."""
    atomic_save(
        {
            "config": to_dict(cfg),
            "epoch": epoch,
            "student": student.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "synthesizer": synthesizer.state_dict(),
            "bank": bank.state_dict(),
            "seconds": {name: timer.seconds for name, timer in timers.items()},
            "summary": dict(summary),
            "rng": rng_state(),
        },
        out_dir / CHECKPOINT,
    )


def heldout_agreement(run: dict, teacher: torch.nn.Module, batches: int = 2) -> float:
    """Student-teacher top-1 agreement (%) on fresh synthetic batches that never entered the bank.

    They are synthesised without the adversarial term, so they show the synthetic distribution itself
    rather than the samples the student currently gets wrong.
    """
    synthesizer, student = run["synthesizer"], run["student"]
    info = dataset_info(synthesizer.cfg.dataset)
    images = torch.cat([synthesizer.synthesize(None).images for _ in range(batches)])
    return agreement(student, teacher, images, info.mean, info.std)
