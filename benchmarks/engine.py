"""Engine benchmark: every number measured in one run on one machine, written with machine info.

(a) synthesis seconds per image: fast_meta k=2/5/10 (full calls) vs DeepInversion-2k. DeepInversion's
    cost is linear in its steps, so it is timed over `--deepinv-steps` steps and scaled to 2000; the
    speed-up is computed the paper's way, t(DeepInv-2k) / t(Fast-k) per image (docs/method.md §6).
(b) KD throughput (images/s) for 400-step-style KD with batches from (i) fdk's device-resident uint8
    bank with device-side augmentation and (ii) an upstream-style pool: PNG files on disk read by a
    DataLoader that is rebuilt after every synthesis call (docs/method.md §4.2, §7).
(c) end to end: a full paper-schedule run estimated from (a) and (b) (synthesis per call x epochs + KD
    per step x KD steps), fast-k vs DeepInv-2k; and a small measured run (smoke preset) with its split.

    python benchmarks/engine.py --device cpu --out benchmarks/results/engine-cpu.json
    python benchmarks/engine.py --device cuda --batch 256 --out benchmarks/results/engine-h100.json
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from fdk.augment import quantize
from fdk.bank import SyntheticBank
from fdk.checkpoint import write_json
from fdk.distill import distill
from fdk.inputs import dataset_spec
from fdk.kd import kd_phase
from fdk.methods import make_synthesizer
from fdk.models import EMBEDDED_TEACHER, create_model, load_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import machine_info
from fdk.utils import Timer, resolve_device, seed_everything


def time_synthesis(cfg, teacher, student, info, calls: int) -> float:
    synth = make_synthesizer(cfg, teacher, info)
    synth.synthesize(student)  # warm-up (allocations, cuDNN autotuning)
    timer = Timer(teacher.parameters().__next__().device)
    for _ in range(calls):
        with timer:
            synth.synthesize(student)
    return timer.seconds / calls


def bench_synthesis(args, device, info):
    teacher = with_random_bn_statistics(create_model(args.teacher, 10)).to(device).eval()
    student = create_model(args.student, 10).to(device)
    rows = {}
    for k in (2, 5, 10):
        cfg = dataclasses.replace(
            PRESETS[f"cifar10/wrn40_2-wrn16_1/fast{k}"], teacher=args.teacher, synth_batch_size=args.batch
        )
        seconds = time_synthesis(cfg, teacher, student, info, args.calls)
        rows[f"fast{k}"] = {"seconds_per_call": seconds, "seconds_per_image": seconds / args.batch}
    cfg = dataclasses.replace(
        PRESETS["cifar10/wrn40_2-wrn16_1/deepinv2k"],
        teacher=args.teacher,
        synth_batch_size=args.batch,
        synth_steps=args.deepinv_steps,
    )
    seconds = time_synthesis(cfg, teacher, student, info, 1) * 2000 / args.deepinv_steps
    rows["deepinv2k"] = {
        "seconds_per_call": seconds,
        "seconds_per_image": seconds / args.batch,
        "measured_steps": args.deepinv_steps,
        "scaled_to_steps": 2000,
    }
    for name in ("fast2", "fast5", "fast10"):
        rows[name]["speedup_vs_deepinv2k"] = rows["deepinv2k"]["seconds_per_image"] / rows[name]["seconds_per_image"]
    return rows


class UpstreamPngPool:
    """Upstream's ImagePool, re-created for comparison: one PNG per image; a new DataLoader over all
    files after every synthesis call; CPU transforms (crop pad 4, flip, ToTensor, Normalize) in workers."""

    def __init__(self, root: Path, mean, std, batch_size: int, workers: int, device):
        import torchvision.transforms as T

        self.root, self.batch_size, self.workers, self.device, self.count = root, batch_size, workers, device, 0
        self.transform = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
        )
        self.iterator = None

    def add(self, images_uint8: torch.Tensor) -> None:
        for image in images_uint8.permute(0, 2, 3, 1).cpu().numpy():
            Image.fromarray(image).save(self.root / f"{self.count}.png")
            self.count += 1
        files = sorted(self.root.glob("*.png"))  # upstream os.walk-ed every file after every call
        dataset = _Files(files, self.transform)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=True, num_workers=self.workers, pin_memory=False
        )
        self.loader, self.iterator = loader, iter(loader)

    def kd_batch(self, batch_size, mean, std, memory_format, augment=None):
        """The next DataLoader batch; its workers already applied upstream's CPU transforms (`augment` unused)."""
        try:
            x = next(self.iterator)
        except StopIteration:  # upstream's DataIter restarts an exhausted loader
            self.iterator = iter(self.loader)
            x = next(self.iterator)
        return x.to(self.device).contiguous(memory_format=memory_format)


class _Files(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB"))


def bench_kd(args, device, info):
    """KD steps per second with the two data paths; the pool holds `--pool` images (upstream: 5k-56k)."""
    teacher = with_random_bn_statistics(create_model(args.teacher, 10)).to(device).eval()
    student = create_model(args.student, 10).to(device)
    memory_format = torch.channels_last  # as DistillConfig.channels_last defaults
    teacher.to(memory_format=memory_format)
    student.to(memory_format=memory_format)
    cfg = dataclasses.replace(
        PRESETS["cifar10/wrn40_2-wrn16_1/fast5"], kd_steps=args.kd_steps, kd_batch_size=args.batch
    )
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    pool = quantize(torch.rand(args.pool, 3, 32, 32))
    results = {}

    bank = SyntheticBank(device)
    bank.add(pool.to(device))
    kd_phase(dataclasses.replace(cfg, kd_steps=2), teacher, student, optimizer, bank, info, memory_format)
    timer = Timer(device)
    with timer:
        bank.add(quantize(torch.rand(args.batch, 3, 32, 32)).to(device))  # one synthesis call's worth
        kd_phase(cfg, teacher, student, optimizer, bank, info, memory_format)
    results["fdk_bank"] = {"seconds": timer.seconds, "images_per_second": cfg.kd_steps * args.batch / timer.seconds}

    with tempfile.TemporaryDirectory() as tmp:
        upstream = UpstreamPngPool(Path(tmp), info.mean, info.std, args.batch, args.workers, device)
        upstream.add(pool)
        timer = Timer(device)
        with timer:
            upstream.add(quantize(torch.rand(args.batch, 3, 32, 32)))  # PNG writes + DataLoader rebuild
            kd_phase(cfg, teacher, student, optimizer, upstream, info, memory_format)
        results["upstream_png_dataloader"] = {
            "seconds": timer.seconds,
            "images_per_second": cfg.kd_steps * args.batch / timer.seconds,
            "workers": args.workers,
        }
    results["speedup"] = results["upstream_png_dataloader"]["seconds"] / results["fdk_bank"]["seconds"]
    results.update(pool_images=args.pool, kd_steps=cfg.kd_steps, batch=args.batch)
    return results


# KD engine settings compared by bench_kd_variants: (amp, channels_last, torch.compile mode or None).
KD_VARIANTS = {
    "fp32, contiguous, eager (upstream's engine)": ("off", False, None),
    "fp32, channels_last, eager": ("off", True, None),
    "bf16, channels_last, eager": ("bf16", True, None),
    "bf16, channels_last, compile": ("bf16", True, "default"),
    "bf16, channels_last, compile + CUDA graphs": ("bf16", True, "reduce-overhead"),
}


def bench_kd_variants(args, device, info, variants=None) -> dict:
    """KD images/s of fdk's KD step (kd_phase on the device bank) per engine setting; compile time apart."""
    results = {}
    for name, (amp, channels_last, mode) in (variants or KD_VARIANTS).items():
        if mode == "reduce-overhead" and device.type != "cuda":
            results[name] = {"skipped": "CUDA graphs need a CUDA device"}
            continue
        torch.manual_seed(0)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        teacher = with_random_bn_statistics(create_model(args.teacher, 10)).to(device, memory_format=memory_format)
        student = create_model(args.student, 10).to(device, memory_format=memory_format)
        teacher.eval()
        cfg = dataclasses.replace(
            PRESETS["cifar10/wrn40_2-wrn16_1/fast5"], kd_steps=args.kd_steps, kd_batch_size=args.batch, amp=amp
        )
        optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
        if mode is not None:
            teacher, student = torch.compile(teacher, mode=mode), torch.compile(student, mode=mode)
        bank = SyntheticBank(device)
        bank.add(quantize(torch.rand(args.pool, 3, 32, 32)).to(device))
        warm = Timer(device)
        with warm:  # compilation, autotuning, allocator warm-up
            kd_phase(dataclasses.replace(cfg, kd_steps=3), teacher, student, optimizer, bank, info, memory_format)
        timer = Timer(device)
        with timer:
            kd_phase(cfg, teacher, student, optimizer, bank, info, memory_format)
        results[name] = {
            "images_per_second": cfg.kd_steps * args.batch / timer.seconds,
            "ms_per_step": 1000 * timer.seconds / cfg.kd_steps,
            "warmup_seconds": warm.seconds,
        }
    first = next(iter(results.values()))
    for row in results.values():
        if "images_per_second" in row and "images_per_second" in first:
            row["speedup_vs_first"] = row["images_per_second"] / first["images_per_second"]
    return results


def bench_end_to_end(args, device):
    base = PRESETS["smoke/fast_meta"]  # a short run keeps at least one KD epoch (fewer warm-up epochs)
    cfg = dataclasses.replace(base, epochs=args.e2e_epochs, warmup=min(base.warmup, args.e2e_epochs - 1))
    teacher = (
        load_model(EMBEDDED_TEACHER)
        if EMBEDDED_TEACHER.exists()
        else with_random_bn_statistics(create_model("resnet20", 10))
    )
    started = time.perf_counter()
    summary = distill(cfg, teacher, None, device=device, progress=False).summary
    wall = time.perf_counter() - started
    return {
        "preset": "smoke/fast_meta",
        "epochs": cfg.epochs,
        "synth_seconds": summary["synth_seconds"],
        "kd_seconds": summary["kd_seconds"],
        "wall_seconds": wall,
        "images_synthesized": summary["images_synthesized"],
    }


def paper_schedule_estimate(synthesis: dict, kd: dict, cfg_fast, cfg_deep) -> dict:
    """End-to-end seconds of a full run, from the per-call synthesis and per-step KD times measured above:
    every epoch synthesises one batch, KD runs kd_steps steps in every epoch after warm-up (docs/method.md §4.1)."""
    kd_per_step = kd["fdk_bank"]["seconds"] / kd["kd_steps"]
    rows = {}
    for name, cfg in [(f"fast{k}", dataclasses.replace(cfg_fast, synth_steps=k)) for k in (2, 5, 10)] + [
        ("deepinv2k", cfg_deep)
    ]:
        synth = cfg.epochs * synthesis[name]["seconds_per_call"]
        kd_total = (cfg.epochs - cfg.warmup) * cfg.kd_steps * kd_per_step
        rows[name] = {"epochs": cfg.epochs, "synth_seconds": synth, "kd_seconds": kd_total, "total": synth + kd_total}
    for name in ("fast2", "fast5", "fast10"):
        rows[name]["end_to_end_speedup_vs_deepinv2k"] = rows["deepinv2k"]["total"] / rows[name]["total"]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--teacher", default="wrn40_2")
    parser.add_argument("--student", default="wrn16_1")
    parser.add_argument("--batch", type=int, default=64, help="synthesis and KD batch (paper: 256)")
    parser.add_argument("--calls", type=int, default=2, help="timed synthesis calls per k")
    parser.add_argument("--deepinv-steps", type=int, default=20, help="DeepInversion steps timed (scaled to 2000)")
    parser.add_argument("--kd-steps", type=int, default=40)
    parser.add_argument("--pool", type=int, default=5120, help="images in the pool (upstream: 5,376 at KD start)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="upstream DataLoader workers")
    parser.add_argument("--e2e-epochs", type=int, default=4)
    parser.add_argument(
        "--kd-variants", action="store_true", help="also KD images/s per engine setting (bf16, compile, ...)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    seed_everything(0)
    info = dataset_spec("cifar10")
    results = {
        "machine": {"device": str(device), **machine_info(device)},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    results["date"] = time.strftime("%Y-%m-%d")
    results["synthesis"] = bench_synthesis(args, device, info)
    print(json.dumps(results["synthesis"], indent=1), flush=True)
    results["kd"] = bench_kd(args, device, info)
    print(json.dumps(results["kd"], indent=1), flush=True)
    results["paper_schedule_estimate"] = paper_schedule_estimate(
        results["synthesis"],
        results["kd"],
        PRESETS["cifar10/wrn40_2-wrn16_1/fast5"],
        PRESETS["cifar10/wrn40_2-wrn16_1/deepinv2k"],
    )
    print(json.dumps(results["paper_schedule_estimate"], indent=1), flush=True)
    results["end_to_end"] = bench_end_to_end(args, device)
    print(json.dumps(results["end_to_end"], indent=1), flush=True)
    if args.kd_variants:
        results["kd_variants"] = bench_kd_variants(args, device, info)
        print(json.dumps(results["kd_variants"], indent=1), flush=True)
    write_json(results, args.out)
    return results


if __name__ == "__main__":
    main()
