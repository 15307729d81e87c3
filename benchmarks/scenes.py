"""Segmentation quality on the CIFAR scenes (docs/method.md §12): the embedded segnet_small teacher, the
data-free segnet_tiny students (dense_oh=self and dense_oh=off), a segnet_tiny trained with the same KD on
the real train scenes, and an untrained one; test mIoU, pixel accuracy and per-class IoU of each, from
one run on one machine.

    python benchmarks/scenes.py --data ../shared/data/cifar10 --preset smoke/segmentation \\
        --out benchmarks/results/scenes-smoke-cpu.json
"""

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import fdk
from fdk.checkpoint import write_json
from fdk.run import machine_info


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CIFAR-10 root (the scenes are built from it)")
    parser.add_argument("--teacher", default=str(fdk.EMBEDDED_SEG_TEACHER))
    parser.add_argument("--preset", default="smoke/segmentation")
    parser.add_argument("--real-images", type=int, default=None, help="real train scenes for the KD reference")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = fdk.resolve_device(args.device)
    teacher = fdk.load_model(args.teacher).to(device).eval()
    spec = teacher.input_spec
    test = fdk.load_task_split(args.data, spec.name, "test")
    train = fdk.load_task_split(args.data, spec.name, "train")
    cfg = fdk.get_preset(args.preset)
    rows, started = {}, time.perf_counter()

    def record(name, scores, **extra):
        rows[name] = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"], "iou": scores["iou"], **extra}
        print(f"{name:>22}: mIoU {scores['miou']:.2f}  pixel acc {scores['pixel_acc']:.2f}  {extra}", flush=True)

    record("teacher", fdk.evaluate_task(teacher, test, spec))
    for dense_oh in ("self", "off"):
        run = fdk.distill(dataclasses.replace(cfg, dense_oh=dense_oh), teacher, test, device=device, progress=False)
        summary = run.summary
        record(f"data-free (oh={dense_oh})", fdk.evaluate_task(run.student, test, spec),
               synth_seconds=summary["synth_seconds"], kd_seconds=summary["kd_seconds"],
               images=summary["images_synthesized"], best_miou=summary["best_miou"])  # fmt: skip
    images = train.images[: args.real_images]
    t0 = time.perf_counter()
    real = fdk.distill_on_images(cfg, teacher, images, device=device)
    record("KD on real scenes", fdk.evaluate_task(real["student"], test, spec), images=len(images),
           kd_seconds=time.perf_counter() - t0)  # fmt: skip
    record("untrained", fdk.untrained_score(cfg, test, spec, device=device))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(device), "threads": torch.get_num_threads(),
              "preset": args.preset, "config": dataclasses.asdict(cfg), "teacher": args.teacher,
              "test_scenes": len(test), "rows": rows, "seconds": time.perf_counter() - started}  # fmt: skip
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
