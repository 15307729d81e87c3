"""Every synthesis method of Table 1 on one engine, one machine, one run (docs/method.md §6, §15, §16).

For FastDFKD (Fast-2/5/10), DeepInv-2k, CMI-500 and the fast CMI-5, DAFL, ZSKT, DFQ and DFAD at the
WRN-40-2 -> WRN-16-1 shapes (random weights with non-trivial BN statistics: cost depends on shapes only):

    seconds_per_call        one synthesis call at the benchmark's batch (k steps; 1 generator step for
                            the generator baselines); DeepInv-2k and CMI-500 are timed over a few steps
                            and scaled, their cost being linear in the steps
    seconds_per_image       that over the batch
    kd_images_per_second    KD steps from the bank, or from fresh G(z) batches for the generator baselines
                            (ZSKT with its attention transfer, DFAD with its L1 loss)
    paper_synthesis_hours   the paper's schedule on this machine: epochs x calls per epoch x seconds per
                            call at the paper's batch (scaled linearly from the benchmark's batch), the
                            quantity of Table 1's GPU-hour columns; and DeepInv-2k's over it (the speed-up)

    .venv/bin/python benchmarks/methods.py --device cpu --out benchmarks/results/methods-cpu.json
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
from fdk.methods import make_synthesizer
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import machine_info
from fdk.utils import resolve_device, seed_everything

PAIR = "cifar10/wrn40_2-wrn16_1"
METHODS = ("fast2", "fast5", "fast10", "deepinv2k", "cmi500", "cmi5", "dafl", "zskt", "dfq", "dfad")
SCALED = {"deepinv2k": 2000, "cmi500": 500}  # timed over --scaled-steps steps, scaled to these


def measure(name: str, args, device, inputs) -> dict:
    paper = PRESETS[f"{PAIR}/{name}"]
    cfg = dataclasses.replace(paper, synth_batch_size=args.batch, kd_batch_size=args.batch)
    if name in SCALED:
        cfg = dataclasses.replace(cfg, synth_steps=args.scaled_steps)
    seed_everything(0)
    teacher = with_random_bn_statistics(create_model(cfg.teacher, 10)).to(device).eval()
    student = create_model(cfg.student, 10).to(device)
    synth = synthesis_cost(cfg, teacher, inputs, student, calls=args.calls, warmup=1)
    per_call = synth["seconds_per_call"] * (SCALED[name] / args.scaled_steps if name in SCALED else 1)
    source = make_synthesizer(cfg, teacher, inputs) if cfg.method in ("dafl", "zskt", "dfq", "dfad") else None
    kd = kd_cost(cfg, teacher, student, inputs, steps=args.kd_steps, source=source)
    paper_calls = paper.epochs * paper.calls_per_epoch
    hours = paper_calls * per_call * paper.synth_batch_size / args.batch / 3600
    row = {"method": cfg.method, "steps_per_call": paper.synth_steps, "seconds_per_call": per_call,
           "seconds_per_image": per_call / args.batch, "kd_images_per_second": kd["images_per_second"],
           "paper_calls": paper_calls, "paper_synthesis_hours": hours}  # fmt: skip
    print(json.dumps({"name": name, **{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}}),
          flush=True)  # fmt: skip
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=64, help="synthesis and KD batch (the paper's: 256)")
    p.add_argument("--calls", type=int, default=2, help="timed synthesis calls per method")
    p.add_argument("--scaled-steps", type=int, default=10, help="steps timed for DeepInv-2k and CMI-500")
    p.add_argument("--kd-steps", type=int, default=10)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    inputs = dataset_spec("cifar10")
    started = time.perf_counter()
    rows = {name: measure(name, args, device, inputs) for name in args.methods.split(",")}
    if "deepinv2k" in rows:
        for row in rows.values():
            row["speedup_vs_deepinv2k"] = rows["deepinv2k"]["paper_synthesis_hours"] / row["paper_synthesis_hours"]
    result = {"pair": PAIR, "batch": args.batch, "rows": rows, "seconds": time.perf_counter() - started,
              "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
              "machine": {"device": str(device), **machine_info(device)}}  # fmt: skip
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
