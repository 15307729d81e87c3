"""Segmentation speed (docs/method.md §12): synthesis seconds per image for Fast-2/5/10 and KD images/s, at
128 px for the paper's NYUv2 pair (DeepLabV3-ResNet50 -> DeepLabV3-MobileNetV2) and at 64 px for the
CIFAR-scenes pair (segnet_small -> segnet_tiny), every number from one run on one machine.

The teacher's weights do not change the cost, so a DeepLabV3 with random BN statistics stands in for a
trained NYUv2 teacher. KD is one step of `fdk.kd.kd_phase` (teacher forward, student forward and
backward, SGD) on bank batches; synthesis is whole `synthesize()` calls with the adversarial term on.

    python benchmarks/segmentation.py --device cpu --out benchmarks/results/segmentation-cpu.json
    python benchmarks/segmentation.py --device cuda --batch 64 --out benchmarks/results/segmentation-h100.json
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fdk.augment import quantize
from fdk.bank import SyntheticBank
from fdk.checkpoint import write_json
from fdk.inputs import dataset_spec
from fdk.kd import kd_phase
from fdk.methods import make_synthesizer
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import machine_info
from fdk.utils import Timer, resolve_device, seed_everything

PAIRS = {
    "nyuv2": ("nyuv2/deeplabv3_resnet50-deeplabv3_mobilenet/fast{k}", "deeplabv3_resnet50", "deeplabv3_mobilenet"),
    "cifar_scenes": ("cifar_scenes/segnet_small-segnet_tiny/fast5", "segnet_small", "segnet_tiny"),
}


def bench_pair(dataset: str, device, batch: int, calls: int, kd_steps: int, ks) -> dict:
    preset, teacher_name, student_name = PAIRS[dataset]
    spec = dataset_spec(dataset)
    memory_format = torch.channels_last
    teacher = with_random_bn_statistics(create_model(teacher_name, spec.num_classes)).to(
        device, memory_format=memory_format
    )
    student = create_model(student_name, spec.num_classes).to(device, memory_format=memory_format)
    rows = {"image_size": spec.image_size, "batch": batch}
    for k in ks:
        cfg = dataclasses.replace(PRESETS[preset.format(k=5 if dataset == "cifar_scenes" else k)], synth_steps=k,
                                  synth_batch_size=batch, kd_batch_size=batch, kd_steps=kd_steps, ep_steps=kd_steps)  # fmt: skip
        synth = make_synthesizer(cfg, teacher.eval(), spec)
        synth.synthesize(student)  # warm-up: allocations, cuDNN autotuning
        timer = Timer(device)
        for _ in range(calls):
            with timer:
                synth.synthesize(student)
        rows[f"fast{k}_seconds_per_image"] = timer.seconds / (calls * batch)
    bank = SyntheticBank(device)
    bank.add(quantize(torch.rand(4 * batch, 3, spec.image_size, spec.image_size, device=device)))
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum)
    kd_phase(dataclasses.replace(cfg, kd_steps=1), teacher, student, optimizer, bank, spec, memory_format)  # warm-up
    timer = Timer(device)
    with timer:
        kd_phase(cfg, teacher, student, optimizer, bank, spec, memory_format)
    rows["kd_images_per_second"] = kd_steps * batch / timer.seconds
    rows["params"] = {"teacher": sum(p.numel() for p in teacher.parameters()),
                      "student": sum(p.numel() for p in student.parameters())}  # fmt: skip
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8, help="images per synthesis call and per KD step")
    parser.add_argument("--calls", type=int, default=2, help="timed synthesis calls per k")
    parser.add_argument("--kd-steps", type=int, default=5, help="timed KD steps")
    parser.add_argument("--ks", default="2,5,10", help="the Fast-k values to time")
    parser.add_argument("--datasets", default="nyuv2,cifar_scenes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    seed_everything(0)
    started = time.perf_counter()
    ks = [int(k) for k in args.ks.split(",")]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(device), "threads": torch.get_num_threads(),
              "args": vars(args) | {"out": str(args.out)}, "pairs": {}}  # fmt: skip
    for dataset in args.datasets.split(","):
        result["pairs"][dataset] = bench_pair(dataset, device, args.batch, args.calls, args.kd_steps, ks)
        print(dataset, json.dumps(result["pairs"][dataset]), flush=True)
    result["seconds"] = time.perf_counter() - started
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
