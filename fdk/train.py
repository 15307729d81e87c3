"""Teacher training: any zoo model on a decoded split, data and augmentation on the device.

Classifiers and segmentation models (docs/method.md §12) alike: SGD, linear warm-up then cosine decay
per step (or DFAD's step schedule), cross-entropy (or DFAD's focal loss per pixel), bf16 autocast and
channels_last on accelerators. One full checkpoint per epoch (model, optimiser, epoch, RNG states) makes runs
resumable; the final weights go to `model.safetensors` with the measured test accuracy.
"""

import itertools
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fdk.checkpoint import WriteFailed, save_weights
from fdk.config import option, to_dict
from fdk.data import batches, load_split
from fdk.evaluate import evaluate_task, headline_metric
from fdk.inputs import dataset_spec
from fdk.losses import focal_loss
from fdk.models import check_architecture, create_model, load_backbone_weights
from fdk.run import RunFolder, git_commit
from fdk.run_state import RunState
from fdk.segdata import load_seg_split, seg_batches
from fdk.stop import StopRequest
from fdk.utils import AMP_MODES, FdkError, autocast, resolve_device, rng_state, seed_everything, set_rng_state


@dataclass(frozen=True)
class TeacherConfig:
    arch: str = option("resnet20", "zoo model name (fdk.models.MODELS)")
    dataset: str = option("cifar10", "dataset name (data_stats/<name>.json)")
    epochs: int = option(200, "training epochs")
    batch_size: int = option(128, "images per SGD step")
    lr: float = option(0.1, "peak SGD learning rate (after warm-up)")
    momentum: float = option(0.9, "SGD momentum (Nesterov when nesterov=true)")
    nesterov: bool = option(True, "use Nesterov momentum")
    weight_decay: float = option(5e-4, "L2 weight decay on all parameters")
    warmup_epochs: float = option(1.0, "linear learning-rate warm-up, in epochs, before the cosine decay to 0")
    schedule: str = option("cosine", "cosine (per step, to 0) or step (x step_gamma every step_epochs; DFAD)")
    step_epochs: int = option(100, "schedule=step: epochs between learning-rate drops")
    step_gamma: float = option(0.1, "schedule=step: factor of each drop")
    loss: str = option("ce", "ce (cross-entropy) or focal (gamma 2, per pixel; DFAD's segmentation teachers)")
    crop: int = option(0, "segmentation: random crop side for training, synchronised with the labels (0: none)")
    backbone_weights: str = option("", "DeepLabV3: ImageNet backbone weights file (torchvision format); '': random")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing (0 keeps teacher logits sharp for KD)")
    seed: int = option(0, "random seed")
    amp: str = option("auto", "mixed precision: auto (bf16 on an accelerator, fp32 on the CPU), bf16, off")
    channels_last: bool = option(True, "channels_last memory format (faster convs on GPU and CPU)")

    def __post_init__(self):
        check_architecture("arch", self.arch)
        for name in ("epochs", "batch_size", "step_epochs"):
            if getattr(self, name) < 1:
                raise FdkError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name, allowed in (("amp", AMP_MODES), ("schedule", ("cosine", "step")), ("loss", ("ce", "focal"))):
            if getattr(self, name) not in allowed:
                raise FdkError(f"{name}={getattr(self, name)!r} is not valid; choose one of {', '.join(allowed)}")


# Recipes. "gpu" is meant to reach the upstream teachers' accuracy (ResNet-34 95.70%, WRN-40-2 94.87% on
# CIFAR-10); upstream's own train_scratch recipe (lr 0.1, steps at 120/150/180, wd 1e-4) falls ~2 points
# short of them (docs/method.md §10, CMI issue #2). "cpu" trained the embedded resnet20 (weights/README.md).
# "nyuv2" is DFAD's segmentation-teacher recipe (train_teacher_seg.py: focal loss, SGD lr 0.05, wd 5e-4,
# StepLR(100, 0.1), 200 epochs, batch 16, 128 px crops; ImageNet backbone via --set backbone_weights=FILE);
# "scenes_cpu" trains the embedded segmentation teacher on the CIFAR scenes (docs/method.md §12).
RECIPES = {
    "gpu": TeacherConfig(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4),
    "cpu": TeacherConfig(arch="resnet20", epochs=60, batch_size=256, lr=0.2, weight_decay=5e-4),
    "nyuv2": TeacherConfig(
        arch="deeplabv3_resnet50",
        dataset="nyuv2",
        epochs=200,
        batch_size=16,
        lr=0.05,
        nesterov=False,
        weight_decay=5e-4,
        warmup_epochs=0,
        schedule="step",
        step_epochs=100,
        loss="focal",
        crop=128,
    ),  # fmt: skip
    "scenes_cpu": TeacherConfig(
        arch="segnet_small", dataset="cifar_scenes", epochs=12, batch_size=64, lr=0.1, weight_decay=5e-4
    ),  # fmt: skip
}


def learning_rate(cfg: TeacherConfig, step: int, steps_per_epoch: int) -> float:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    progress = (step - warmup) / max(1.0, total - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(kw_only=True)
class TeacherState(RunState):
    PARTS: ClassVar[tuple[str, ...]] = ("model", "optimizer")
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer


def train_teacher(
    cfg: TeacherConfig,
    data_root,
    out_dir,
    device="auto",
    resume: bool = False,
    progress: bool = True,
    on_epoch=None,
    overwrite: bool = False,
) -> dict:
    """Train `cfg.arch` on `cfg.dataset` from `data_root` into the run folder `out_dir`; returns the final
    test metrics. resume: continue the run in out_dir (its saved config must equal cfg). overwrite: replace
    a run that out_dir holds (without it, starting there is refused: docs/method.md §8).
    on_epoch(record): called after each epoch's checkpoint; returning True ends the run there, resumable.
    SIGTERM or SIGINT stop it after the current step, checkpointed there (fdk.stop.Stopped)."""
    if resume and overwrite:
        raise FdkError("resume and overwrite exclude each other: resume continues the run, overwrite replaces it")
    folder = RunFolder(out_dir)
    try:
        return _train_teacher(cfg, data_root, folder, resolve_device(device), resume, overwrite, progress, on_epoch)
    except WriteFailed as error:
        raise folder.failed("train-teacher", error) from None
    finally:
        folder.unlock()


def _train_teacher(cfg, data_root, folder, device, resume, overwrite, progress, on_epoch) -> dict:
    if resume:
        folder.check_resume(cfg)
    else:
        folder.check_start(overwrite)
    spec = dataset_spec(cfg.dataset)
    load = load_seg_split if spec.dense else load_split
    train = load(data_root, cfg.dataset, "train").to(device)  # validated before anything is written
    test = load(data_root, cfg.dataset, "test").to(device)
    if cfg.batch_size > len(train):
        raise FdkError(f"batch_size={cfg.batch_size} is more than the {len(train)} training images under "
                       f"{data_root}: no full batch to train on; --set batch_size={len(train)} or less")  # fmt: skip
    metric = headline_metric(spec)  # top1, or miou for segmentation
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    seed_everything(cfg.seed)
    model = create_model(cfg.arch, spec.num_classes)
    if cfg.backbone_weights:  # DFAD's teachers start from an ImageNet backbone (docs/method.md §12)
        load_backbone_weights(model, cfg.backbone_weights)
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    state = TeacherState(model=model, optimizer=optimizer, summary={"test": {}})
    if resume:
        folder.resume(state)
    else:
        folder.start("train-teacher", cfg, overwrite=overwrite, data=str(data_root))

    def epoch_batches():
        if spec.dense:  # synchronised crop + flip of images and label maps (§12)
            return seg_batches(train, cfg.batch_size, spec.mean, spec.std, True, True, cfg.crop or None, True)
        return batches(train, cfg.batch_size, spec.mean, spec.std, True, True, True, memory_format)

    steps_per_epoch = len(train) // cfg.batch_size
    start = state.epoch + 1
    stop = StopRequest(f"fdk train-teacher --resume {folder.path}")
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start * steps_per_epoch, disable=not progress)
    with stop:
        for epoch in range(start, cfg.epochs):
            model.train()
            started = time.perf_counter()
            # How far this epoch got: from its start, or from where a graceful stop left it (docs/method.md §8).
            done = state.progress or {"step": 0, "rng": rng_state(), "sums": torch.zeros(3)}
            state.progress = done
            sums = done["sums"].to(device)  # loss, correct and counted (pixels or images)
            stream = epoch_batches()
            if done["step"]:  # replay the epoch's order and augmentation up to the stop; no forward pass
                resumed_rng = rng_state()
                set_rng_state(done["rng"])
                for _ in itertools.islice(stream, done["step"]):
                    pass
                set_rng_state(resumed_rng)  # where the stopped run's random streams were
            for i, (x, y) in enumerate(stream, done["step"]):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
                with autocast(device, cfg.amp):
                    logits = model(x.contiguous(memory_format=memory_format)).float()
                if cfg.loss == "focal":
                    loss = focal_loss(logits, y, ignore_index=spec.ignore_index)
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, ignore_index=spec.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                valid = y != spec.ignore_index  # every sample of a classifier; labelled pixels of a map
                hits = ((logits.argmax(1) == y) & valid).sum()
                sums += torch.stack([loss.detach().float(), hits.float(), valid.sum().float()])
                bar.update()
                if stop.requested:
                    done.update(step=i + 1, sums=sums)
                    folder.save(state)
                    raise stop.stopped(f"in epoch {epoch} after step {i + 1} of {steps_per_epoch}")
            state.progress = None
            loss_sum, correct, counted = sums.tolist()
            train_loss = loss_sum / steps_per_epoch
            if not math.isfinite(train_loss):
                raise FdkError(f"training loss became {train_loss} in epoch {epoch}; last good checkpoint kept")
            metrics = evaluate_task(model, test, spec, amp=cfg.amp)
            record = dict(
                epoch=epoch,
                train_loss=train_loss,
                **{"train_pixel_acc" if spec.dense else "train_top1": 100.0 * correct / counted},
                **{f"test_{k}": v for k, v in metrics.items()},
                lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - started,
            )
            folder.log(**record)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}", **{f"test_{metric}": f"{metrics[metric]:.2f}"})
            state.epoch, state.summary = epoch, {"test": metrics}
            folder.save(state)
            if on_epoch is not None and on_epoch(record):
                break
            if stop.requested and epoch < cfg.epochs - 1:
                raise stop.stopped(f"after epoch {epoch} of {cfg.epochs}")
        bar.close()
        metrics = state.summary["test"]
        headline = {f"test_{k}": metrics.get(k) for k in ((metric, "pixel_acc") if spec.dense else (metric, "top5"))}
        if state.epoch == cfg.epochs - 1:
            save_weights(
                model.state_dict(),
                folder.path / "model.safetensors",
                arch=cfg.arch,
                **spec.to_metadata(),
                **headline,
                config=to_dict(cfg),
                commit=git_commit(),
            )
            folder.finish(headline)
    return metrics
