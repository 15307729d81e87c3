"""`fdk demo`: a short data-free distillation from the embedded teacher, offline, on any machine.

Distils weights/cifar10_resnet20.safetensors into a WRN-16-1 with the `smoke/fast_meta` preset, then
reports the student's agreement with the teacher on held-out synthetic images and, when $FDK_DATA
holds CIFAR-10, its real test accuracy next to an untrained student's. Writes <out>/report.json and
the run folder's samples.png.
"""

import json
import os
import time
from pathlib import Path

from fdk.checkpoint import write_json
from fdk.data import find_split
from fdk.distill import distill
from fdk.evaluate import evaluate, heldout_agreement
from fdk.models import EMBEDDED_TEACHER, create_model, load_model
from fdk.presets import get_preset
from fdk.utils import resolve_device, seed_everything


def run_demo(out_dir="runs/demo", preset: str = "smoke/fast_meta", data_root=None, device="cpu", progress=True,
             overwrite=False):  # fmt: skip
    """The demo replaces an earlier demo run in out_dir (it is scratch); any other run there only with
    `overwrite` (docs/method.md §8)."""
    cfg = get_preset(preset)
    earlier = Path(out_dir) / "run.json"
    overwrite = overwrite or (earlier.is_file() and _is_demo(earlier))
    device = resolve_device(device)
    teacher = load_model(EMBEDDED_TEACHER)
    spec = teacher.input_spec
    test = find_split(data_root or os.environ.get("FDK_DATA"), spec.name, "test")
    parameters = sum(p.numel() for p in teacher.parameters())
    print(f"teacher: {cfg.teacher} on {spec.name} ({parameters:,} parameters)")
    print(f"preset {preset}: {cfg.method}, k={cfg.synth_steps}, {cfg.epochs} epochs x {cfg.kd_steps} KD steps, "
          f"student {cfg.student}")  # fmt: skip
    if test is None:
        print("no CIFAR-10 under $FDK_DATA: reporting agreement on synthetic images only "
              "(set FDK_DATA=<folder with cifar10/test/<class>/*.png> for real accuracy)")  # fmt: skip
    started = time.perf_counter()
    result = distill(cfg, teacher, test, out_dir=out_dir, device=device, progress=progress, overwrite=overwrite,
                     run_info={"demo": True})  # fmt: skip
    report = {
        "preset": preset,
        "heldout_agreement": heldout_agreement(result, teacher, batches=2),
        "synth_seconds": round(result.summary["synth_seconds"], 1),
        "kd_seconds": round(result.summary["kd_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "images_synthesized": result.summary["images_synthesized"],
        "samples": str(Path(out_dir) / "samples.png"),
    }
    if test is not None:
        seed_everything(cfg.seed)
        untrained = create_model(cfg.student, spec.num_classes).to(device)
        report["student_test_top1"] = result.summary["final_top1"]
        report["untrained_test_top1"] = evaluate(untrained, test, spec.mean, spec.std)["top1"]
    write_json(report, Path(out_dir) / "report.json")
    print(json.dumps(report, indent=1))
    return report


def _is_demo(run_file: Path) -> bool:
    try:
        return json.loads(run_file.read_text()).get("demo") is True
    except (OSError, ValueError, AttributeError):
        return False
