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

import fdk.distributed as distributed
from fdk.attention import attention_loss, recorded, transfer_stages
from fdk.augment import crop_flip, make_augment
from fdk.bank import SyntheticBank
from fdk.checkpoint import save_weights
from fdk.config import from_dict, to_dict
from fdk.data import ImageTensors, SegTensors
from fdk.evaluate import agreement, evaluate_task, headline_metric, heldout_metrics
from fdk.init_set import load_init_set
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
    LOCAL_PARTS: ClassVar[tuple[str, ...]] = ("synthesizer", "bank")  # each torchrun rank's own (§14)
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

    Under torchrun (it sets WORLD_SIZE) this runs as one rank of a DistributedDataParallel job (§14,
    fdk/distributed.py): every rank calls it with the same arguments; rank 0 writes the run folder.
    """
    device, owns_group = distributed.setup(resolve_device(device))
    try:
        return _distill(cfg, teacher, test, out_dir, inputs, device, resume, progress, on_epoch, run_info)
    finally:
        distributed.teardown(owns_group)


def _distill(cfg, teacher, test, out_dir, inputs, device, resume, progress, on_epoch, run_info) -> DistillResult:
    rank, world_size = distributed.world()
    main = rank == 0
    folder = RunFolder(out_dir) if out_dir is not None else None
    if resume:
        if folder is None:
            raise FdkError("resume needs the run folder: pass out_dir")
        saved = from_dict(DistillConfig, folder.info()["config"])
        if saved != cfg:
            changed = {k: (v, getattr(cfg, k)) for k, v in to_dict(saved).items() if getattr(cfg, k) != v}
            raise FdkError(f"{folder.path} holds a run with another config (saved vs given: {changed}); "
                           "resume with its config (fdk distill --resume DIR reads it) or use a new out_dir")  # fmt: skip
        if folder.info().get("world_size", 1) != world_size:
            raise FdkError(f"{folder.path} ran on {folder.info().get('world_size', 1)} processes, this resume on "
                           f"{world_size}; resume with torchrun --nproc_per_node {folder.info().get('world_size', 1)}")  # fmt: skip
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    teacher = teacher.to(device, memory_format=memory_format).eval()
    spec = teacher_inputs(teacher, cfg.dataset, inputs)
    metric = headline_metric(spec)  # top1, or miou for segmentation (docs/method.md §12)

    seed_everything(cfg.seed)  # the same student and generator on every rank
    student = create_model(cfg.student, spec.num_classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    synthesizer = make_synthesizer(cfg, teacher, spec)
    if world_size > 1:
        seed_everything(cfg.seed + 1000 * rank)  # then each rank its own random stream: its own batches (§14)
    spill_file = folder.path / f"spill-rank{rank}.u8" if folder and cfg.bank_spill == "disk" else None
    state = DistillState(
        student=student,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_t_max, eta_min=cfg.eta_min),
        synthesizer=synthesizer,
        bank=SyntheticBank(device, cfg.bank_capacity, folder.bank_file_for(rank) if folder else None,
                           device_images=cfg.bank_device_images, spill=cfg.bank_spill, spill_file=spill_file),  # fmt: skip
        timers={name: Timer(device) for name in ("synth", "kd", "eval")},
        summary={f"best_{metric}": None, "best_epoch": None, f"final_{metric}": None, "wall_seconds": 0.0},
    )
    if folder and resume:
        folder.resume(state, rank)
    if folder and main and not resume:
        source = getattr(teacher, "source_file", None)
        info = {"inputs": spec.to_metadata(), "world_size": world_size, "backend": distributed.backend(),
                **(run_info or {})}  # fmt: skip
        folder.start("distill", cfg, teacher_file=source, **info)
    distributed.barrier()  # rank 0 has cleared the folder before any rank writes to it (a bank spill file too)
    if not resume and cfg.init_bank:  # the pre-synthesised set, shared out over the ranks (§13)
        images, total, hours = load_init_set(cfg.init_bank, spec.image_size, rank, world_size)
        state.bank.add(images)
        state.summary.update(init_images=total, init_synth_hours=hours)  # reported apart from synth_hours
    kd_teacher, kd_student = teacher, distributed.wrap_student(student, device)  # DDP averages KD gradients
    if cfg.compile:
        kd_teacher, kd_student = torch.compile(kd_teacher), torch.compile(kd_student)
    kd_augment = make_augment(cfg.kd_augment, spec.image_size, scale=(0.08, 1.0))  # the dataset's train view
    # Generator baselines (§15) train the student on fresh G(z) batches: the synthesizer is the KD source.
    fresh = getattr(state.synthesizer, "fresh_batches", False)
    source = state.synthesizer if fresh else state.bank
    attention = transfer_stages(cfg, teacher, student, spec) if cfg.w_at > 0 else None  # ZSKT (§15)
    test = test.to(device) if test is not None and main else None  # rank 0 evaluates
    timers = state.timers

    bar = tqdm(range(state.epoch + 1, cfg.epochs), initial=state.epoch + 1, total=cfg.epochs,
               disable=not (progress and main))  # fmt: skip
    for epoch in bar:
        started = time.perf_counter()
        kd_loss_sum, kd_iterations = torch.zeros((), device=device), 0
        record = {"epoch": epoch}
        for call in range(cfg.calls_per_epoch):
            with timers["synth"]:
                out = state.synthesizer.synthesize(student, adversarial=epoch >= cfg.adversarial_from)
            if call == 0:  # the student has not trained on this batch yet: a held-out check
                record.update(heldout_metrics(student, teacher, out.images, spec.mean, spec.std))
                record.update({k: v.item() for k, v in out.terms.items()})
                record["synth_loss"] = out.step_losses[-1].item()
            if not fresh:
                state.bank.add(out.images)
            if epoch >= cfg.warmup:
                with timers["kd"]:
                    kd_loss_sum += kd_phase(
                        cfg, kd_teacher, kd_student, optimizer, source, spec, memory_format, kd_augment, attention
                    )
                    distributed.broadcast_buffers(student)  # rank 0's BN running statistics everywhere
                kd_iterations += cfg.kd_steps
        if epoch >= cfg.warmup:
            state.scheduler.step()  # once per KD epoch (§4.3)
        kd_loss_mean = kd_loss_sum.item() / max(1, kd_iterations)
        if not distributed.all_ranks(math.isfinite(kd_loss_mean) and math.isfinite(record["synth_loss"]), device):
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
            if main:
                folder.log(**record)
            folder.save(state, rank)
        shown_keys = (f"test_{metric}", "agreement_new", "classes_new")
        bar.set_postfix({k: f"{record[k]:.4g}" for k in shown_keys if k in record})
        if distributed.any_rank(on_epoch is not None and bool(on_epoch(record)), device):
            break  # the caller ends the run here, e.g. at a time limit; it resumes from this epoch
    bar.close()

    result = DistillResult(summary=run_summary(cfg, state), state=state)
    if folder and main and state.epoch == cfg.epochs - 1:
        shown = state.bank
        if not len(shown):  # a generator baseline keeps no bank: show a fresh batch of its generator (§15)
            shown = SyntheticBank()
            shown.add(state.synthesizer.sample().images.cpu())
        shown.save_grid(folder.path / "samples.png")
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
        "images_synthesized": state.synthesizer.calls * cfg.synth_batch_size * distributed.world()[1],  # all ranks
        "world_size": distributed.world()[1],
        "bank_size": len(state.bank),
        "bank_total": state.bank.total,
        "image_shape": list(state.bank.image_shape) if len(state.bank) else None,
        "synth_seconds": seconds["synth"],
        "synth_hours": seconds["synth"] / 3600,  # the paper's "GPU hours for data synthesis" (§6)
        "kd_seconds": seconds["kd"],
        "eval_seconds": seconds["eval"],
    }


def kd_phase(cfg, teacher, student, optimizer, bank, inputs: InputSpec, memory_format, augment=crop_flip,
             attention=None) -> torch.Tensor:  # fmt: skip
    """kd_steps SGD steps on bank batches (§4.3); returns the summed KD loss (a device scalar: no sync).
    bank: the bank, or a generator baseline's synthesizer (fresh batches, §15); anything with kd_batch().
    augment: the dataset's train view of the bank images (CIFAR: crop_flip; ImageNet: resized_crop, §13).
    attention: (teacher stages, student stages) for ZSKT's attention transfer, weighted by cfg.w_at."""
    student.train()
    total = None
    for _ in range(cfg.kd_steps):
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
