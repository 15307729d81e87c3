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
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

import fdk.distributed as distributed
from fdk.attention import transfer_stages
from fdk.augment import make_augment
from fdk.bank import SyntheticBank
from fdk.checkpoint import WriteFailed, save_weights
from fdk.config import to_dict
from fdk.data import ImageTensors, SegTensors
from fdk.evaluate import evaluate_task, headline_metric, heldout_metrics
from fdk.init_set import load_init_set
from fdk.inputs import InputSpec, teacher_inputs
from fdk.kd import kd_step
from fdk.methods import Synthesizer, make_synthesizer
from fdk.models import create_model
from fdk.presets import DistillConfig
from fdk.run import RunFolder
from fdk.run_state import RunState
from fdk.stop import StopRequest
from fdk.utils import FdkError, Timer, resolve_device, seed_everything

STOP_EVERY = 50  # torchrun ranks agree on a signal every this many KD steps (one all-reduce each, §8)


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
    overwrite: bool = False,
    progress: bool = True,
    on_epoch=None,
    run_info: dict | None = None,
) -> DistillResult:
    """Distil `teacher` into a new `cfg.student` without data.

    test: a real test split for per-epoch evaluation (optional). out_dir: the run folder (fdk/run.py;
    None: nothing is written). inputs: the teacher's input contract (fdk.inputs.teacher_inputs).
    resume: continue the run in out_dir (its saved config must equal cfg); overwrite: replace the run it
    holds, which is refused otherwise (docs/method.md §8.1). on_epoch(record): called after each epoch's
    checkpoint (live plots); returning True ends the run there, resumable. run_info: extra JSON values for
    run.json. SIGTERM or SIGINT stop a run with a folder after its current step, checkpointed there, and
    raise fdk.stop.Stopped (a KeyboardInterrupt). Under torchrun (WORLD_SIZE set) this is one rank of a
    DistributedDataParallel job (§14): every rank calls it alike; rank 0 writes the run folder.
    """
    if resume and overwrite:
        raise FdkError("resume and overwrite exclude each other: resume continues the run, overwrite replaces it")
    device, owns_group = distributed.setup(resolve_device(device))
    folder = RunFolder(out_dir) if out_dir is not None else None
    stop = StopRequest(f"fdk distill --resume {folder.path}") if folder else StopRequest("", listen=False)
    try:
        with stop:
            result = _distill(cfg, teacher, test, folder, inputs, device, resume, overwrite, progress, on_epoch,
                              run_info, stop)  # fmt: skip
    except BaseException as error:
        distributed.teardown(owns_group, clean=False)  # other ranks may be anywhere: no barrier
        if isinstance(error, WriteFailed) and folder:
            raise folder.failed("distill", error) from None
        raise
    finally:
        if folder:
            folder.unlock()
    distributed.teardown(owns_group)
    return result


def _distill(cfg, teacher, test, folder, inputs, device, resume, overwrite, progress, on_epoch, run_info,
             stop) -> DistillResult:  # fmt: skip
    rank, world_size = distributed.world()
    main = rank == 0
    if folder and resume:  # the folder holds this run, no other process runs in it (§8.1)
        distributed.on_main(lambda: folder.check_resume(cfg, world_size), device)
    elif folder:  # refused here, before any work, when the folder holds a run or is in use (§8)
        distributed.on_main(lambda: folder.check_start(overwrite, world_size), device)
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
    spill_file = folder.spill_file_for(rank) if folder and cfg.bank_spill == "disk" else None
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
    if folder and not resume:  # rank 0 takes the lock and starts the run; the other ranks wait for it
        source = getattr(teacher, "source_file", None)
        info = {"inputs": spec.to_metadata(), "backend": distributed.backend(), **(run_info or {})}
        distributed.on_main(lambda: folder.start("distill", cfg, source, overwrite, world_size, **info), device)
    if folder and resume:
        distributed.on_main(lambda: folder.resume(state, rank), device)
        if not main:
            folder.resume(state, rank)
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

    def stop_here(where: str) -> None:
        """When a signal asked for a stop (on any rank: they agree, §14), checkpoint this point and raise."""
        if folder is None or not distributed.any_rank(stop.requested, device):
            return
        state.summary["wall_seconds"] += time.perf_counter() - started
        timers["kd"].flush()  # a stop inside the KD phase: its seconds so far go into the checkpoint
        folder.save(state, rank)
        raise stop.stopped(f"in epoch {epoch} {where}")

    if folder and distributed.any_rank(stop.requested, device):  # a signal during the set-up: nothing ran
        raise stop.stopped("before its first step", then=None if resume else "the same command with --overwrite")
    bar = tqdm(range(state.epoch + 1, cfg.epochs), initial=state.epoch + 1, total=cfg.epochs,
               disable=not (progress and main))  # fmt: skip
    for epoch in bar:
        started = time.perf_counter()
        # How far this epoch got: from its start, or from where a graceful stop left it (§8).
        done = state.progress or {"call": 0, "synthesized": False, "kd_step": 0, "record": {"epoch": epoch},
                                  "kd_loss_sum": torch.zeros(())}  # fmt: skip
        state.progress = done
        done["kd_loss_sum"] = done["kd_loss_sum"].to(device)
        record = done["record"]
        while done["call"] < cfg.calls_per_epoch:
            if not done["synthesized"]:
                with timers["synth"]:
                    out = state.synthesizer.synthesize(student, adversarial=epoch >= cfg.adversarial_from)
                if done["call"] == 0:  # the student has not trained on this batch yet: a held-out check
                    record.update(heldout_metrics(student, teacher, out.images, spec.mean, spec.std))
                    record.update({k: v.item() for k, v in out.terms.items()})
                    record["synth_loss"] = out.step_losses[-1].item()
                if not fresh:
                    state.bank.add(out.images)
                done["synthesized"] = True
                stop_here(f"after synthesis call {done['call'] + 1} of {cfg.calls_per_epoch}")
            if epoch >= cfg.warmup:
                with timers["kd"]:
                    while done["kd_step"] < cfg.kd_steps:
                        done["kd_loss_sum"] += kd_step(cfg, kd_teacher, kd_student, optimizer, source, spec,
                                                       memory_format, kd_augment, attention)  # fmt: skip
                        done["kd_step"] += 1
                        # one process looks at the flag every step; torchrun ranks agree every STOP_EVERY
                        if world_size == 1 or done["kd_step"] % STOP_EVERY == 0:
                            stop_here(f"after KD step {done['kd_step']} of {cfg.kd_steps}")
                    distributed.broadcast_buffers(student)  # rank 0's BN running statistics everywhere
            done.update(call=done["call"] + 1, synthesized=False, kd_step=0)
        state.progress = None
        if epoch >= cfg.warmup:
            with warnings.catch_warnings():  # resumed after the epoch's last KD step: no optimiser step here yet
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                state.scheduler.step()  # once per KD epoch (§4.3)
        kd_iterations = cfg.calls_per_epoch * cfg.kd_steps if epoch >= cfg.warmup else 0
        kd_loss_mean = done["kd_loss_sum"].item() / max(1, kd_iterations)
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
        if epoch < cfg.epochs - 1 and folder and distributed.any_rank(stop.requested, device):
            raise stop.stopped(f"after epoch {epoch} of {cfg.epochs}")  # its checkpoint is written
    bar.close()

    result = DistillResult(summary=run_summary(cfg, state), state=state)
    if folder and main and state.epoch == cfg.epochs - 1:  # a signal now lets the outputs be written first
        write_outputs(folder, cfg, state, spec, metric, result.summary)
    return result


def write_outputs(folder: RunFolder, cfg: DistillConfig, state: DistillState, spec: InputSpec, metric: str,
                  summary: dict) -> None:  # fmt: skip
    """A finished run's sample grid, student weights and end record (a failed write: resume writes them)."""
    shown = state.bank
    if not len(shown):  # a generator baseline keeps no bank: show a fresh batch of its generator (§15)
        shown = SyntheticBank()
        shown.add(state.synthesizer.sample().images.cpu())
    shown.save_grid(folder.path / "samples.png")
    save_weights(
        state.student.state_dict(),
        folder.path / "student.safetensors",
        arch=cfg.student,
        **spec.to_metadata(),
        **{f"test_{metric}": summary[f"final_{metric}"]},
        config=to_dict(cfg),
    )
    folder.finish(summary)


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
