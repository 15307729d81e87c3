"""ImageNet-scale synthesis and KD cost (docs/method.md §13): images/s and peak memory, one run, one machine.

(a) the grid: synthesis images/s and peak memory of fast_meta_imagenet (ResNet-50 teacher, the student in
    the adversarial term) for each batch x k, and KD images/s per batch, in the chosen engine mode;
(b) the engine modes at one (batch, k): fp32 (upstream's), bf16 autocast (BN statistics stay fp32),
    + channels_last, + torch.compile of the KD forward passes (--compile; GPU runs);
(c) the comparison with upstream's logged 4.4 synthesised images/s (R50 -> R50: 1,000 images per epoch in
    0.0630 GPU-hours, reference §6), as a speed-up per (batch, k) at k=50.

Weights do not change the cost, so the networks are randomly initialised. On a CPU use a reduced size:

    python benchmarks/imagenet.py --device cpu --size 64 --batches 4,8 --ks 2,5 --out benchmarks/results/imagenet-cpu.json
    python benchmarks/imagenet.py --device cuda --out benchmarks/results/imagenet-h100.json     # 224 px, 50/100/200, k 10/50
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fdk.checkpoint import write_json
from fdk.cost import kd_cost, synthesis_cost
from fdk.inputs import dataset_spec
from fdk.models import create_model
from fdk.presets import PRESETS
from fdk.run import machine_info
from fdk.utils import resolve_device, seed_everything

UPSTREAM_IMAGES_PER_SECOND = 1000 / (0.0630 * 3600)  # R50 -> R50 final run: 4.41 images/s (reference §6)
MODES = {"fp32": dict(amp="off", channels_last=False), "bf16": dict(amp="bf16", channels_last=False),
         "bf16+channels_last": dict(amp="bf16", channels_last=True)}  # fmt: skip


def models(args, device, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    seed_everything(0)
    teacher = create_model("resnet50_imagenet", 1000).to(device, memory_format=fmt).eval()
    student = create_model(f"{args.student}_imagenet", 1000).to(device, memory_format=fmt)
    return teacher, student


def measure(args, device, inputs, batch: int, k: int, mode: str, compile_kd: bool = False) -> dict:
    cfg = dataclasses.replace(PRESETS[f"imagenet/resnet50-{args.student}/fast50"], synth_batch_size=batch,
                              kd_batch_size=batch, synth_steps=k, compile=compile_kd, **MODES[mode])  # fmt: skip
    teacher, student = models(args, device, cfg.channels_last)
    row = {"batch": batch, "k": k, "mode": mode, "compile_kd": compile_kd}
    synth = synthesis_cost(cfg, teacher, inputs, student, calls=args.calls, warmup=1)
    row.update({f"synth_{key}": value for key, value in synth.items()})
    if compile_kd:
        teacher, student = torch.compile(teacher), torch.compile(student)
    kd = kd_cost(cfg, teacher, student, inputs, steps=args.kd_steps, warmup=2 if compile_kd else 1)
    row.update({f"kd_{key}": value for key, value in kd.items()})
    if args.size == 224 and k == 50:  # upstream's setting; elsewhere a ratio would compare unlike work
        row["speedup_vs_upstream"] = synth["images_per_second"] / UPSTREAM_IMAGES_PER_SECOND
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def host_syncs(args, device, inputs) -> int | None:
    """Host synchronisations in one synthesis call (batch 8, k 3), counted by CUDA's sync debug mode."""
    if device.type != "cuda":
        return None
    import warnings

    from fdk.methods import make_synthesizer

    cfg = dataclasses.replace(PRESETS[f"imagenet/resnet50-{args.student}/fast50"], synth_batch_size=8, synth_steps=3)
    teacher, student = models(args, device, cfg.channels_last)
    synth = make_synthesizer(cfg, teacher, inputs)
    synth.synthesize(student)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            synth.synthesize(student)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=224, help="image side (224: the paper; a CPU needs less)")
    p.add_argument("--batches", default="50,100,200")
    p.add_argument("--ks", default="10,50")
    p.add_argument("--student", default="resnet18", choices=["resnet50", "resnet18", "mobilenetv2"])
    p.add_argument("--calls", type=int, default=2, help="timed synthesis calls per point (after one warm-up)")
    p.add_argument("--kd-steps", type=int, default=10, help="timed KD steps per point")
    p.add_argument("--mode", default=None, help="grid's engine mode (default: bf16+channels_last on a GPU, fp32 on CPU)")
    p.add_argument("--modes", default=",".join(MODES), help="engine modes of section (b); '' for none")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile of the KD passes (section b)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    inputs = dataclasses.replace(dataset_spec("imagenet"), image_size=args.size)
    batches, ks = [int(b) for b in args.batches.split(",")], [int(k) for k in args.ks.split(",")]
    mode = args.mode or ("bf16+channels_last" if device.type == "cuda" else "fp32")
    started = time.perf_counter()
    grid = [measure(args, device, inputs, b, k, mode) for b in batches for k in ks]
    b, k = batches[len(batches) // 2], ks[0]
    modes = [measure(args, device, inputs, b, k, m) for m in args.modes.split(",") if m]
    if args.compile:
        modes.append(measure(args, device, inputs, b, k, "bf16+channels_last", compile_kd=True))
    result = {"size": args.size, "student": args.student, "grid_mode": mode, "grid": grid, "modes": modes,
              "host_syncs_per_call": host_syncs(args, device, inputs),
              "upstream_images_per_second": UPSTREAM_IMAGES_PER_SECOND, "seconds": time.perf_counter() - started,
              "machine": {"device": str(device), **machine_info(device)}}  # fmt: skip
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
