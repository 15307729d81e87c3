"""The paper's Figure 1 in miniature, measured on this machine: student accuracy against synthesis time.

The embedded CIFAR-10 teacher (resnet20, 91.67%) is distilled into a WRN-16-1 by every synthesis
method with the SAME KD schedule (20 epochs of 40 steps at batch 96, student lr 0.2, T 20; 96 images per
synthesis call), so the runs differ only in how their images are made:

    fast2, fast5, fast10      FastDFKD, meta reuse, k = 2 / 5 / 10 inner steps (the paper's Fast-k)
    sequential5, no_reuse5    the Figure-2 ablations at k = 5
    deepinv50/100/200         DeepInversion with 50 / 100 / 200 Adam steps per batch (the paper: 2,000)
    cmi50                     CMI with 50 steps per batch (the paper: 500), contrastive term on
    dafl, zskt, dfq, dfad     the generator baselines: one generator step per call, each call followed by
                              their own 5 KD steps (DFQ 10) on fresh generator batches; the same 40 KD
                              steps per epoch as everyone (docs/method.md §15)

Each run is a resumable fdk run folder under --runs (a finished one is read back, not rerun); one
results file collects every run's accuracy-over-synthesis-time curve and states, for a few accuracy
levels, how many synthesis seconds each method needed to reach it and the ratio to DeepInversion's.

    .venv/bin/python benchmarks/figure1.py --data ../shared/data --out benchmarks/results/figure1-cpu   # ~80 min on 2 cores
"""

import argparse
import dataclasses
import time
from pathlib import Path

import fdk
from fdk.checkpoint import write_json
from fdk.presets import FAST_K, fast_preset
from fdk.presets_baselines import baseline_preset
from fdk.run import machine_info

# The shared KD schedule (the smoke size of fdk's presets), evaluated every other epoch.
SCHEDULE = dict(epochs=20, warmup=2, ep_steps=40, kd_steps=40, kd_batch_size=96, synth_batch_size=96,
                cosine_t_max=18, eval_every=2, ngf=32, reset_l0_call=5, lr=0.2)  # fmt: skip
TINY = dict(epochs=3, warmup=1, ep_steps=2, kd_steps=2, kd_batch_size=8, synth_batch_size=8, cosine_t_max=2,
            eval_every=1, ngf=8, nz=16, student="resnet8")  # fmt: skip


def configs(tiny: bool) -> dict[str, fdk.DistillConfig]:
    base = fast_preset("cifar10", "resnet20", "wrn16_1", 5)
    deep = fdk.get_preset("cifar10/resnet20-wrn16_1/deepinv2k")
    runs = {}
    for k in (2, 5, 10):
        lr_gen, lr_z = FAST_K[k]
        runs[f"fast{k}"] = dataclasses.replace(base, synth_steps=k, lr_gen=lr_gen, lr_z=lr_z)
    runs["sequential5"] = dataclasses.replace(base, method="fast", reset_l0=False)
    runs["no_reuse5"] = dataclasses.replace(base, method="no_reuse", reset_l0=False)
    for steps in (50, 100, 200):
        runs[f"deepinv{steps}"] = dataclasses.replace(deep, synth_steps=steps, lr=base.lr)
    runs["cmi50"] = dataclasses.replace(fdk.get_preset("cifar10/wrn40_2-wrn16_1/cmi500"), teacher="resnet20",
                                        synth_steps=50, cmi_memory=4096, cmi_negatives=1024)  # fmt: skip
    for method in ("dafl", "zskt", "dfq", "dfad"):
        runs[method] = baseline_preset(method, "cifar10", "resnet20", "wrn16_1")  # upstream: 1 generator step per call
    changes = {**SCHEDULE, **(TINY if tiny else {})}
    out = {}
    for name, cfg in runs.items():
        c = dict(changes)
        if cfg.method in ("dafl", "zskt", "dfq", "dfad"):  # their own interleave, the same KD steps per epoch
            c["kd_steps"] = max(1, min(cfg.kd_steps, c["ep_steps"] // 2))
        if tiny and name == "cmi50":
            c.update(synth_steps=2, cmi_negatives=4)
        if tiny and name.startswith("deepinv"):
            c["synth_steps"] = {"deepinv50": 2, "deepinv100": 3, "deepinv200": 4}[name]
        out[name] = dataclasses.replace(cfg, **c)
    return out


def time_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    """The synthesis seconds at the first evaluation with test top-1 >= level (None: never)."""
    return next((seconds for seconds, top1 in curve if top1 >= level), None)


def summarize(runs: dict) -> dict:
    """Per accuracy level: each method's synthesis seconds to reach it, and DeepInversion's time over it."""
    finals = {name: run["final_top1"] for name, run in runs.items()}
    deep = [name for name in runs if name.startswith("deepinv")]
    if not deep:  # e.g. --only without a DeepInversion run: no reference to compare with
        return {"levels": {}, "reference": None}
    best_deep = max(deep, key=lambda name: finals[name])
    levels = sorted({round(finals[best_deep], 2), *[x for x in (15.0, 20.0, 25.0) if x < finals[best_deep]]})
    table = {}
    for level in levels:
        reach = {name: time_to_reach(run["curve"], level) for name, run in runs.items()}
        deep_time = min((reach[n] for n in deep if reach[n] is not None), default=None)
        table[f"{level:.2f}"] = {
            name: {"synth_seconds": t, "deepinversion_over_this": (deep_time / t) if deep_time and t else None}
            for name, t in reach.items()
        }
    return {"levels": table, "reference": f"the fastest DeepInversion run to reach each level; best: {best_deep}"}


def markdown(results: dict) -> str:
    """The README's table: one row per method, the time to reach each accuracy level and DeepInversion's
    time over it."""
    levels = results["time_to_accuracy"]["levels"]
    head = ["method", "steps per batch", "final top-1 %", "synthesis s"] + [
        f"s to reach {lv}% (DeepInv ÷ this)" for lv in levels
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, run in results["runs"].items():
        cells = [name, str(run["synth_steps"]), f"{run['final_top1']:.2f}", f"{run['synth_seconds']:.0f}"]
        for level in levels.values():
            t, ratio = level[name]["synth_seconds"], level[name]["deepinversion_over_this"]
            cells.append("never" if t is None else f"{t:.0f} ({ratio:.1f}×)" if ratio else f"{t:.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = plt.get_cmap("tab10")
    for i, (name, run) in enumerate(runs.items()):
        marker = "s" if name.startswith(("deepinv", "cmi")) else ("^" if name.startswith(("seq", "no_")) else "o")
        marker = "D" if name in ("dafl", "zskt", "dfq", "dfad") else marker
        left.scatter(run["synth_seconds"], run["final_top1"], color=colours(i), marker=marker, s=60, label=name)
        seconds, top1 = zip(*run["curve"])
        right.plot(seconds, top1, color=colours(i), marker=marker, markersize=3, label=name)
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xlabel("synthesis seconds (log scale)")
        axis.set_ylabel("student test top-1 (%)")
        axis.grid(alpha=0.3)
    left.set_title("final accuracy vs total synthesis time")
    right.set_title("accuracy during the run vs synthesis time so far")
    right.legend(fontsize=8, ncol=2)
    machine = results["machine"]
    where = machine.get("gpu") or f"{machine['cpu_threads']} thread(s) of an {machine['cpu']} CPU"
    fig.suptitle(f"Figure 1 in miniature: resnet20 (CIFAR-10) -> WRN-16-1, one KD schedule for all, {where}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder holding cifar10/test (default $FDK_DATA)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/figure1-cpu"), help="writes OUT.json, OUT.png"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/figure1"), help="run folders (resumable)")
    parser.add_argument("--only", nargs="*", help="run only these methods")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for the test on CPU")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = args.data if args.data is not None else __import__("os").environ.get("FDK_DATA", "")
    teacher = fdk.load_model(fdk.EMBEDDED_TEACHER)
    test = fdk.load_split(data, "cifar10", "test") if data else None
    if test is None:
        raise SystemExit("figure1 needs the real CIFAR-10 test split: --data DIR or FDK_DATA")
    if args.tiny:
        test = fdk.ImageTensors(test.images[::50], test.labels[::50], test.classes)
    runs = {}
    for name, cfg in configs(args.tiny).items():
        if args.only and name not in args.only:
            continue
        folder = args.runs / name
        done = (folder / "run.json").exists() and (fdk.read_run(folder)["summary"] is not None)
        if not done:
            resume = (folder / "checkpoint.pt").exists()
            started = time.perf_counter()
            fdk.distill(cfg, teacher, test, folder, device=args.device, progress=False, resume=resume,
                        overwrite=not resume)  # a start that died before its first checkpoint is replaced
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        record = fdk.read_run(folder)
        curve = [(r["synth_seconds"], r["test_top1"]) for r in record["epochs"] if "test_top1" in r]
        s = record["summary"]
        runs[name] = {"method": cfg.method, "synth_steps": cfg.synth_steps, "final_top1": s["final_top1"],
                      "best_top1": s["best_top1"], "synth_seconds": s["synth_seconds"], "kd_seconds": s["kd_seconds"],
                      "wall_seconds": s["wall_seconds"], "images": s["images_synthesized"], "curve": curve}  # fmt: skip
        print(f"{name:12s} top-1 {s['final_top1']:6.2f}%  synthesis {s['synth_seconds']:8.1f} s", flush=True)
    results = {
        "what": "Figure 1 in miniature: embedded resnet20 -> wrn16_1 on CIFAR-10, every method on one KD schedule",
        "schedule": TINY if args.tiny else SCHEDULE,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"device": args.device, **machine_info()},
        "command": "benchmarks/figure1.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "runs": runs,
        "time_to_accuracy": summarize(runs),
    }
    write_json(results, args.out.with_suffix(".json"))
    plot(results, args.out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
