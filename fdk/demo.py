"""`fdk demo`: a short data-free distillation from the embedded teacher, offline, on any machine.

Distils weights/cifar10_resnet20.safetensors into a WRN-16-1 with the `smoke/fast_meta` preset, then
reports the student's agreement with the teacher on held-out synthetic images and, when $FDK_DATA
holds CIFAR-10, its real test accuracy next to an untrained student's. Writes runs/demo/samples.png.
"""

import json
import os
import time
from pathlib import Path

import torch

from fdk.checkpoint import load_model, read_metadata
from fdk.data import dataset_info, load_split
from fdk.distill import distill, heldout_agreement
from fdk.evaluate import evaluate
from fdk.models import create_model
from fdk.presets import get_preset
from fdk.utils import ROOT, resolve_device, seed_everything

EMBEDDED_TEACHER = ROOT / "weights" / "cifar10_resnet20.safetensors"


def load_teacher(path="") -> torch.nn.Module:
    """Teacher weights from a file; "" means the embedded CIFAR-10 resnet20."""
    return load_model(path or EMBEDDED_TEACHER)


def runs_dir(out="") -> Path:
    """Where notebooks write their runs; "" means runs/notebooks in the repository."""
    return Path(out) if out else ROOT / "runs" / "notebooks"


def real_test_split(data_root=None):
    """CIFAR-10 test split from data_root or $FDK_DATA, or None when neither holds it."""
    root = data_root or os.environ.get("FDK_DATA")
    if not root:
        return None
    for candidate in (Path(root), Path(root) / "cifar10"):
        if (candidate / "test").is_dir():
            return load_split(candidate, "cifar10", "test")
    return None


def run_demo(out_dir="runs/demo", preset: str = "smoke/fast_meta", data_root=None, device="cpu", progress=True):
    cfg = get_preset(preset)
    device = resolve_device(device)
    meta = read_metadata(EMBEDDED_TEACHER)
    teacher = load_model(EMBEDDED_TEACHER)
    test = real_test_split(data_root)
    print(
        f"teacher: {meta['arch']} on {meta['dataset']}, recorded test top-1 {meta['test_top1']:.2f}% "
        f"({sum(p.numel() for p in teacher.parameters()):,} parameters)"
    )
    print(
        f"preset {preset}: {cfg.method}, k={cfg.synth_steps}, {cfg.epochs} epochs x {cfg.kd_steps} KD steps, "
        f"student {cfg.student}"
    )
    if test is None:
        print(
            "no CIFAR-10 under $FDK_DATA: reporting agreement on synthetic images only "
            "(set FDK_DATA=<folder with cifar10/test/<class>/*.png> for real accuracy)"
        )
    started = time.perf_counter()
    run = distill(cfg, teacher, test, out_dir=out_dir, device=device, progress=progress)
    report = {
        "preset": preset,
        "teacher_recorded_top1": meta["test_top1"],
        "heldout_agreement": heldout_agreement(run, teacher, batches=2),
        "synth_seconds": round(run["synth_seconds"], 1),
        "kd_seconds": round(run["kd_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "images_synthesized": run["images_synthesized"],
        "samples": str(Path(out_dir) / "samples.png"),
    }
    if test is not None:
        info = dataset_info("cifar10")
        seed_everything(cfg.seed)
        untrained = create_model(cfg.student, info.num_classes).to(device)
        report["student_test_top1"] = run["final_top1"]
        report["untrained_test_top1"] = evaluate(untrained, test, info.mean, info.std)["top1"]
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report
