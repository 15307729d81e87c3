"""Where does one distillation epoch's time go? Synthesis, KD (sampling + augmentation, teacher forward,
student forward/backward, optimiser step), evaluation and bookkeeping (held-out check, bank insert,
checkpoint), each timed with device synchronisation, plus the top operators from torch.profiler.

It rebuilds one epoch of `fdk.distill` from the same pieces, so every phase can be timed on its own.
The per-step synchronisation costs a little; the un-instrumented KD phase is timed too, to show how much.

    python benchmarks/profile_epoch.py --device cpu --batch 64 --kd-steps 20 --out benchmarks/results/profile-cpu.json
    python benchmarks/profile_epoch.py --device cuda --out benchmarks/results/profile-h100.json   # paper sizes
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from fdk.augment import quantize
from fdk.bank import SyntheticBank
from fdk.checkpoint import write_json
from fdk.distill import DistillState
from fdk.evaluate import agreement, evaluate
from fdk.inputs import dataset_spec
from fdk.kd import kd_phase
from fdk.losses import kd_loss
from fdk.methods import make_synthesizer
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import RunFolder, machine_info
from fdk.utils import Timer, autocast, resolve_device, seed_everything


class Phases:
    """Named synchronised timers: `with phases("name"): ...`."""

    def __init__(self, device):
        self.device, self.timers = device, {}

    def __call__(self, name: str) -> Timer:
        return self.timers.setdefault(name, Timer(self.device))

    def seconds(self) -> dict:
        return {name: timer.seconds for name, timer in self.timers.items()}


def instrumented_kd(cfg, teacher, student, optimizer, bank, info, memory_format, phases: Phases) -> None:
    """`fdk.kd.kd_phase`, one synchronised timer per part of a KD step."""
    student.train()
    for _ in range(cfg.kd_steps):
        with phases("kd: sample + augment"):
            x = bank.kd_batch(cfg.kd_batch_size, info.mean, info.std, memory_format)
        with phases("kd: teacher forward"), autocast(x.device, cfg.amp), torch.no_grad():
            t = teacher(x)
        with phases("kd: student forward + loss"):
            with autocast(x.device, cfg.amp):
                s = student(x)
            loss = kd_loss(s.float(), t.float(), cfg.T)
        with phases("kd: backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phases("kd: optimiser step"):
            optimizer.step()


def profile_epoch(args, device) -> dict:
    base = PRESETS[args.preset]
    cfg = dataclasses.replace(
        base,
        synth_batch_size=args.batch or base.synth_batch_size,
        kd_batch_size=args.batch or base.kd_batch_size,
        kd_steps=args.kd_steps or base.kd_steps,
    )
    info = dataset_spec(cfg.dataset)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    seed_everything(0)
    teacher = (
        with_random_bn_statistics(create_model(cfg.teacher, info.num_classes))
        .to(device)
        .eval()
        .to(memory_format=memory_format)
    )
    student = create_model(cfg.student, info.num_classes).to(device, memory_format=memory_format)
    synthesizer = make_synthesizer(cfg, teacher, info)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.cosine_t_max, eta_min=cfg.eta_min)
    tmp = tempfile.TemporaryDirectory()
    folder = RunFolder(tmp.name)
    bank = SyntheticBank(device, file=folder.bank_file)
    bank.add(quantize(torch.rand(args.bank, 3, info.image_size, info.image_size)).to(device))
    test = _fake_test_split(args.eval_images, info, device)
    state = DistillState(student=student, optimizer=optimizer, scheduler=scheduler, synthesizer=synthesizer,
                         bank=bank, timers={name: Timer(device) for name in ("synth", "kd", "eval")})  # fmt: skip

    # Warm-up: allocations, cuDNN autotuning, the synthesizer's persistent buffers, the bank file so far.
    bank.add(synthesizer.synthesize(student).images)
    kd_phase(dataclasses.replace(cfg, kd_steps=3), teacher, student, optimizer, bank, info, memory_format)
    folder.save(state)

    phases = Phases(device)
    started = time.perf_counter()
    with phases("synthesis"):
        out = synthesizer.synthesize(student)
    with phases("bookkeeping: held-out agreement"):
        agreement(student, teacher, out.images, info.mean, info.std)
    with phases("bookkeeping: bank insert"):
        bank.add(out.images)
    instrumented_kd(cfg, teacher, student, optimizer, bank, info, memory_format, phases)
    with phases("bookkeeping: scheduler + loss sync"):
        scheduler.step()
        out.step_losses[-1].item()
    with phases("evaluation"):
        evaluate(student, test, info.mean, info.std)
    with phases("bookkeeping: checkpoint (this epoch's images appended to bank.u8)"):
        folder.save(state)
    checkpoint_bytes = folder.checkpoint_file.stat().st_size
    epoch_seconds = time.perf_counter() - started
    tmp.cleanup()

    plain = Timer(device)
    with plain:
        kd_phase(cfg, teacher, student, optimizer, bank, info, memory_format)
    seconds = phases.seconds()
    instrumented_kd_seconds = sum(v for k, v in seconds.items() if k.startswith("kd:"))
    return {
        "preset": args.preset,
        "config": {"synth_batch_size": cfg.synth_batch_size, "synth_steps": cfg.synth_steps,
                   "kd_steps": cfg.kd_steps, "kd_batch_size": cfg.kd_batch_size, "amp": cfg.amp},
        "bank_images": len(bank),
        "checkpoint_megabytes": checkpoint_bytes / 2**20,
        "eval_images": args.eval_images,
        "epoch_seconds": epoch_seconds,
        "phases_seconds": seconds,
        "phases_share": {k: v / epoch_seconds for k, v in seconds.items()},
        "kd_seconds_uninstrumented": plain.seconds,
        "kd_seconds_instrumented": instrumented_kd_seconds,
    }  # fmt: skip


def _fake_test_split(n: int, info, device):
    from fdk.data import ImageTensors

    images = quantize(torch.rand(n, 3, info.image_size, info.image_size))
    return ImageTensors(images, torch.randint(0, info.num_classes, (n,)), tuple(info.classes)).to(device)


def operator_table(args, device, rows: int = 15) -> str:
    """torch.profiler's top operators (self time) over one synthesis call and a few KD steps."""
    from torch.profiler import ProfilerActivity, profile

    cfg = dataclasses.replace(PRESETS[args.preset], synth_batch_size=args.batch or 256, kd_steps=5)
    info = dataset_spec(cfg.dataset)
    teacher = with_random_bn_statistics(create_model(cfg.teacher, info.num_classes)).to(device).eval()
    student = create_model(cfg.student, info.num_classes).to(device)
    synthesizer = make_synthesizer(cfg, teacher, info)
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum)
    bank = SyntheticBank(device)
    bank.add(synthesizer.synthesize(student).images)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        bank.add(synthesizer.synthesize(student).images)
        kd_phase(cfg, teacher, student, optimizer, bank, info, torch.contiguous_format)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10/wrn40_2-wrn16_2/fast5")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="synthesis and KD batch (default: the preset's)")
    parser.add_argument("--kd-steps", type=int, default=None, help="KD steps in the epoch (default: the preset's)")
    parser.add_argument("--bank", type=int, default=5376, help="images already in the bank (KD start: 5,376)")
    parser.add_argument("--eval-images", type=int, default=10000, help="test-split size for the evaluation phase")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    result = {"machine": {"device": str(device), **machine_info(device)}, "date": time.strftime("%Y-%m-%d")}
    result.update(profile_epoch(args, device))
    result["operators"] = operator_table(args, device)
    write_json(result, args.out)
    width = max(map(len, result["phases_seconds"]))
    for name, seconds in sorted(result["phases_seconds"].items(), key=lambda item: -item[1]):
        print(f"{name:{width}s} {seconds:9.3f} s  {100 * result['phases_share'][name]:5.1f}%")
    print(f"epoch {result['epoch_seconds']:.3f} s; KD uninstrumented {result['kd_seconds_uninstrumented']:.3f} s")
    print(result["operators"])
    return result


if __name__ == "__main__":
    main()
