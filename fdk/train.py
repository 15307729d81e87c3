"""Teacher training: any zoo model on a decoded split, data and augmentation on the device.

SGD with Nesterov momentum, linear warm-up then cosine decay per step, bf16 autocast and channels_last
on accelerators. One full checkpoint per epoch (model, optimiser, epoch, RNG states) makes runs
resumable; the final weights go to `model.safetensors` with the measured test accuracy.
"""

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fdk.checkpoint import save_weights
from fdk.config import from_dict, option, to_dict
from fdk.data import batches, load_split
from fdk.evaluate import evaluate
from fdk.inputs import dataset_spec
from fdk.models import check_architecture, create_model
from fdk.run import RunFolder, RunState, git_commit
from fdk.utils import AMP_MODES, FdkError, autocast, resolve_device, seed_everything


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
    label_smoothing: float = option(0.0, "cross-entropy label smoothing (0 keeps teacher logits sharp for KD)")
    seed: int = option(0, "random seed")
    amp: str = option("auto", "mixed precision: auto (bf16 on an accelerator, fp32 on the CPU), bf16, off")
    channels_last: bool = option(True, "channels_last memory format (faster convs on GPU and CPU)")

    def __post_init__(self):
        check_architecture("arch", self.arch)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FdkError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.amp not in AMP_MODES:
            raise FdkError(f"amp={self.amp!r} is not valid; choose one of {', '.join(AMP_MODES)}")


# Recipes. "gpu" is meant to reach the upstream teachers' accuracy (ResNet-34 95.70%, WRN-40-2 94.87% on
# CIFAR-10); upstream's own train_scratch recipe (lr 0.1, steps at 120/150/180, wd 1e-4) falls ~2 points
# short of them (docs/method.md §10, CMI issue #2). "cpu" trained the embedded resnet20 (weights/README.md).
RECIPES = {
    "gpu": TeacherConfig(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4),
    "cpu": TeacherConfig(arch="resnet20", epochs=60, batch_size=256, lr=0.2, weight_decay=5e-4),
}


def learning_rate(cfg: TeacherConfig, step: int, steps_per_epoch: int) -> float:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
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
) -> dict:
    """Train `cfg.arch` on `cfg.dataset` from `data_root` into the run folder `out_dir`; returns the final
    test metrics. resume: continue the run in out_dir (its saved config must equal cfg).
    on_epoch(record): called after each epoch's checkpoint; returning True ends the run there, resumable."""
    device = resolve_device(device)
    folder = RunFolder(out_dir)
    if resume:
        saved = from_dict(TeacherConfig, folder.info()["config"])
        if saved != cfg:
            raise FdkError(f"{folder.path} holds a run with another config; resume with its own (--resume DIR)")
    spec = dataset_spec(cfg.dataset)
    train = load_split(data_root, cfg.dataset, "train").to(device)  # validated before anything is written
    test = load_split(data_root, cfg.dataset, "test").to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    seed_everything(cfg.seed)
    model = create_model(cfg.arch, spec.num_classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    state = TeacherState(model=model, optimizer=optimizer, summary={"test": {}})
    if resume:
        folder.resume(state)
    else:
        folder.start("train-teacher", cfg, data=str(data_root))

    steps_per_epoch = len(train) // cfg.batch_size
    start = state.epoch + 1
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start * steps_per_epoch, disable=not progress)
    for epoch in range(start, cfg.epochs):
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i, (x, y) in enumerate(
            batches(train, cfg.batch_size, spec.mean, spec.std, True, True, True, memory_format)
        ):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
            with autocast(device, cfg.amp):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            bar.update()
        train_loss = loss_sum.item() / steps_per_epoch
        if not math.isfinite(train_loss):
            raise FdkError(f"training loss became {train_loss} in epoch {epoch}; last good checkpoint kept")
        metrics = evaluate(model, test, spec.mean, spec.std, amp=cfg.amp)
        record = dict(
            epoch=epoch,
            train_loss=train_loss,
            train_top1=100.0 * correct.item() / (steps_per_epoch * cfg.batch_size),
            test_top1=metrics["top1"],
            test_top5=metrics["top5"],
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
        )
        folder.log(**record)
        bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}", test_top1=f"{metrics['top1']:.2f}")
        state.epoch, state.summary = epoch, {"test": metrics}
        folder.save(state)
        if on_epoch is not None and on_epoch(record):
            break
    bar.close()
    metrics = state.summary["test"]
    if state.epoch == cfg.epochs - 1:
        save_weights(
            model.state_dict(),
            folder.path / "model.safetensors",
            arch=cfg.arch,
            **spec.to_metadata(),
            test_top1=metrics.get("top1"),
            test_top5=metrics.get("top5"),
            config=to_dict(cfg),
            commit=git_commit(),
        )
        folder.finish({"test_top1": metrics.get("top1"), "test_top5": metrics.get("top5")})
    return metrics
