"""Data-free distillation: the outer loop of FastDFKD (docs/method.md §4).

    for epoch in range(epochs):
        for call in range(ep_steps // kd_steps):                  # one call in every paper preset
            batch = synthesizer.synthesize(student, adversarial=epoch >= adversarial_from)   # timed (§6)
            bank.add(batch.images)                                 # uint8, on the device
            if epoch >= warmup: kd_steps x [x ~ bank, augmented; SGD on T²·KL(T(x) || S(x)) at temperature T]
        if epoch >= warmup: cosine.step()                          # T_max = 200 KD epochs, eta_min 2e-4
        evaluate on the real test split (when given); log; checkpoint everything, atomically

`DistillState` is everything a checkpoint holds; `distill()` returns the JSON summary and that state.
"""

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from fdk.bank import SyntheticBank
from fdk.checkpoint import save_weights
from fdk.config import from_dict, to_dict
from fdk.data import ImageTensors, SegTensors
from fdk.evaluate import agreement, evaluate_task, headline_metric
from fdk.inputs import InputSpec, teacher_inputs
from fdk.losses import kd_loss, l1_logit_loss
from fdk.methods import Synthesizer, make_synthesizer
from fdk.models import create_model
from fdk.presets import DistillConfig
from fdk.run import RunFolder, RunState
from fdk.utils import FdkError, Timer, autocast, resolve_device, seed_everything


@dataclass(kw_only=True)
class DistillState(RunState):
    PARTS: ClassVar[tuple[str, ...]] = ("student", "optimizer", "scheduler", "synthesizer", "bank")
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    synthesizer: Synthesizer
    bank: SyntheticBank


@dataclass
class DistillResult:
    summary: dict  # JSON: final and best test top-1 (mIoU for segmentation), seconds per phase, images, ...
    state: DistillState  # the live objects: student, synthesizer, bank, optimiser, ...

    @property
    def student(self) -> torch.nn.Module:
        return self.state.student

    @property
    def bank(self) -> SyntheticBank:
        return self.state.bank

    @property
    def synthesizer(self) -> Synthesizer:
        return self.state.synthesizer


def distill(
    cfg: DistillConfig,
    teacher: torch.nn.Module,
    test: ImageTensors | SegTensors | None = None,
    out_dir=None,
    *,
    inputs: InputSpec | None = None,
    device="auto",
    resume: bool = False,
    progress: bool = True,
    on_epoch=None,
    run_info: dict | None = None,
) -> DistillResult:
    """Distil `teacher` into a new `cfg.student` without data.

    test: a real test split for per-epoch evaluation (optional). out_dir: the run folder (fdk/run.py;
    None: nothing is written). inputs: the teacher's input contract (fdk.inputs.teacher_inputs).
    resume: continue the run in out_dir; its saved config must equal cfg. on_epoch(record): called
    after each epoch's checkpoint (live plots); returning True ends the run there, resumable (as an
    interrupt would: tests and time-limited jobs use it).
    run_info: extra JSON values for run.json (the CLI records the data folder and preset there).
    """
    device = resolve_device(device)
    folder = RunFolder(out_dir) if out_dir is not None else None
    if resume:
        if folder is None:
            raise FdkError("resume needs the run folder: pass out_dir")
        saved = from_dict(DistillConfig, folder.info()["config"])
        if saved != cfg:
            changed = {k: (v, getattr(cfg, k)) for k, v in to_dict(saved).items() if getattr(cfg, k) != v}
            raise FdkError(f"{folder.path} holds a run with another config (saved vs given: {changed}); "
                           "resume with its config (fdk distill --resume DIR reads it) or use a new out_dir")  # fmt: skip
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    teacher = teacher.to(device, memory_format=memory_format).eval()
    spec = teacher_inputs(teacher, cfg.dataset, inputs)
    metric = headline_metric(spec)  # top1, or miou for segmentation (docs/method.md §12)

    seed_everything(cfg.seed)
    student = create_model(cfg.student, spec.num_classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = DistillState(
        student=student,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_t_max, eta_min=cfg.eta_min),
        synthesizer=make_synthesizer(cfg, teacher, spec),
        bank=SyntheticBank(device, cfg.bank_capacity, folder.bank_file if folder else None),
        timers={name: Timer(device) for name in ("synth", "kd", "eval")},
        summary={f"best_{metric}": None, "best_epoch": None, f"final_{metric}": None, "wall_seconds": 0.0},
    )
    if folder and resume:
        folder.resume(state)
    elif folder:
        source = getattr(teacher, "source_file", None)
        folder.start("distill", cfg, teacher_file=source, inputs=spec.to_metadata(), **(run_info or {}))
    kd_teacher, kd_student = (torch.compile(teacher), torch.compile(student)) if cfg.compile else (teacher, student)
    test = test.to(device) if test is not None else None
    timers = state.timers

    bar = tqdm(range(state.epoch + 1, cfg.epochs), initial=state.epoch + 1, total=cfg.epochs, disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        kd_loss_sum, kd_iterations = torch.zeros((), device=device), 0
        record = {"epoch": epoch}
        for call in range(cfg.calls_per_epoch):
            with timers["synth"]:
                out = state.synthesizer.synthesize(student, adversarial=epoch >= cfg.adversarial_from)
            if call == 0:  # the student has not trained on this batch yet: a held-out check
                record["agreement_new"] = agreement(student, teacher, out.images, spec.mean, spec.std)
                record.update({k: v.item() for k, v in out.terms.items()})
                record["synth_loss"] = out.step_losses[-1].item()
            state.bank.add(out.images)
            if epoch >= cfg.warmup:
                with timers["kd"]:
                    kd_loss_sum += kd_phase(cfg, kd_teacher, kd_student, optimizer, state.bank, spec, memory_format)
                kd_iterations += cfg.kd_steps
        if epoch >= cfg.warmup:
            state.scheduler.step()  # once per KD epoch (§4.3)
        kd_loss_mean = kd_loss_sum.item() / max(1, kd_iterations)
        if not (math.isfinite(kd_loss_mean) and math.isfinite(record["synth_loss"])):
            where = folder.checkpoint_file if folder else "no checkpoint (out_dir=None)"
            raise FdkError(
                f"loss became non-finite in epoch {epoch} (KD {kd_loss_mean}, synthesis {record['synth_loss']}); "
                f"stopped, last good state kept: {where}. Try a lower lr or lr_gen, or amp=off"
            )
        summary = state.summary
        if test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs - 1):
            with timers["eval"]:
                metrics = evaluate_task(student, test, spec, amp=cfg.amp)
            record.update({f"test_{k}": v for k, v in metrics.items()})
            summary[f"final_{metric}"] = value = metrics[metric]
            if summary[f"best_{metric}"] is None or value > summary[f"best_{metric}"]:
                summary[f"best_{metric}"], summary["best_epoch"] = value, epoch
        summary["wall_seconds"] += time.perf_counter() - started
        record.update(
            kd_loss=kd_loss_mean if kd_iterations else None,
            lr=optimizer.param_groups[0]["lr"],
            bank_size=len(state.bank),
            synth_seconds=timers["synth"].seconds,
            kd_seconds=timers["kd"].seconds,
            eval_seconds=timers["eval"].seconds,
            wall_seconds=summary["wall_seconds"],
        )
        state.epoch = epoch
        if folder:
            folder.log(**record)
            folder.save(state)
        bar.set_postfix({k: f"{record[k]:.2f}" for k in (f"test_{metric}", "agreement_new") if k in record})
        if on_epoch is not None and on_epoch(record):
            break  # the caller ends the run here, e.g. at a time limit; it resumes from this epoch
    bar.close()

    result = DistillResult(summary=run_summary(cfg, state), state=state)
    if folder and state.epoch == cfg.epochs - 1:
        state.bank.save_grid(folder.path / "samples.png")
        save_weights(
            student.state_dict(),
            folder.path / "student.safetensors",
            arch=cfg.student,
            **spec.to_metadata(),
            **{f"test_{metric}": result.summary[f"final_{metric}"]},
            config=to_dict(cfg),
        )
        folder.finish(result.summary)
    return result


def run_summary(cfg: DistillConfig, state: DistillState) -> dict:
    seconds = {name: timer.seconds for name, timer in state.timers.items()}
    return {
        **state.summary,
        "epochs": state.epoch + 1,
        "images_synthesized": state.synthesizer.calls * cfg.synth_batch_size,
        "bank_size": len(state.bank),
        "bank_total": state.bank.total,
        "image_shape": list(state.bank.images.shape[1:]) if len(state.bank) else None,
        "synth_seconds": seconds["synth"],
        "synth_hours": seconds["synth"] / 3600,  # the paper's "GPU hours for data synthesis" (§6)
        "kd_seconds": seconds["kd"],
        "eval_seconds": seconds["eval"],
    }


def kd_phase(cfg, teacher, student, optimizer, bank, inputs: InputSpec, memory_format) -> torch.Tensor:
    """kd_steps SGD steps on bank batches (§4.3); returns the summed KD loss (a device scalar: no sync)."""
    student.train()
    total = None
    for _ in range(cfg.kd_steps):
        x = bank.kd_batch(cfg.kd_batch_size, inputs.mean, inputs.std, memory_format)
        with autocast(x.device, cfg.amp):
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
        loss = kd_loss(s.float(), t.float(), cfg.T) if cfg.kd_loss == "kl" else l1_logit_loss(s.float(), t.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def heldout_agreement(result: DistillResult, teacher: torch.nn.Module, batches: int = 2) -> float:
    """Student-teacher top-1 agreement (%) on fresh synthetic batches that never entered the bank.

    They come from `synthesizer.sample()`, which changes nothing in the run (§4.4), without the
    adversarial term, so they show the synthetic distribution itself rather than the student's mistakes.
    """
    synthesizer = result.synthesizer
    images = torch.cat([synthesizer.sample(seed=i).images for i in range(batches)])
    return agreement(result.student, teacher, images, synthesizer.inputs.mean, synthesizer.inputs.std)
