"""The `fdk` command line. One subcommand per job; config fields become options automatically.

    fdk train-teacher --recipe cpu --arch resnet20 --data $FDK_DATA/cifar10 --out runs/teacher
    fdk evaluate --weights weights/cifar10_resnet20.safetensors --data $FDK_DATA/cifar10
    fdk distill --preset cifar10/wrn40_2-wrn16_2/fast5 --teacher T.pth --data $FDK_DATA/cifar10
    fdk stats --teacher weights/cifar10_resnet20.safetensors --data $FDK_DATA/cifar10

Bad input exits with status 2 and a line that says what is wrong and what to do.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from fdk.config import describe, parse_value
from fdk.utils import FdkError

DEFAULT_TEACHER = "weights/cifar10_resnet20.safetensors"


def _add_config_options(parser: argparse.ArgumentParser, cls) -> None:
    """--field-name VALUE for every field of a config dataclass, parsed with the field's type."""
    group = parser.add_argument_group(f"{cls.__name__} fields (override the recipe/preset)")
    for f in dataclasses.fields(cls):
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"cfg_{f.name}",
            metavar="VALUE",
            help=f"{f.metadata.get('help', '')} (default {f.default!r})",
        )


def _config_from_options(args, cls, base):
    changes = {}
    for f in dataclasses.fields(cls):
        text = getattr(args, f"cfg_{f.name}")
        if text is not None:
            changes[f.name] = parse_value(cls, f.name, text)
    return dataclasses.replace(base, **changes)


def _data_root(value: str | None) -> str | None:
    return value or os.environ.get("FDK_DATA")


def cmd_train_teacher(args) -> None:
    from fdk.train import RECIPES, TeacherConfig, train_teacher

    cfg = _config_from_options(args, TeacherConfig, RECIPES[args.recipe])
    if args.data is None and not args.resume:
        raise FdkError("no data: pass --data DIR (class folders or torchvision files) or set FDK_DATA")
    metrics = train_teacher(cfg, args.data, args.out, args.device, args.resume, not args.no_progress)
    print(json.dumps({"out": str(args.out), **metrics}))


def cmd_evaluate(args) -> None:
    from fdk.checkpoint import load_model, read_metadata
    from fdk.data import dataset_info, load_split
    from fdk.evaluate import evaluate
    from fdk.utils import resolve_device

    root = _data_root(args.data)
    if root is None:
        raise FdkError("no data: pass --data DIR or set FDK_DATA")
    device = resolve_device(args.device)
    dataset = args.dataset or read_metadata(args.weights).get("dataset", "cifar10")
    info = dataset_info(dataset)
    model = load_model(args.weights, args.arch, args.num_classes or info.num_classes).to(device)
    data = load_split(root, dataset, args.split, download=args.download)
    metrics = evaluate(model, data, info.mean, info.std)
    print(json.dumps({"weights": str(args.weights), "dataset": dataset, "split": args.split, **metrics}))


def cmd_distill(args) -> None:
    from fdk.checkpoint import load_model
    from fdk.config import from_dict, override, to_dict
    from fdk.demo import real_test_split
    from fdk.distill import distill
    from fdk.presets import DistillConfig, get_preset

    if args.resume:
        out = Path(args.resume)
        run_file = out / "run.json"
        if not run_file.exists():
            raise FdkError(f"cannot resume: {run_file} does not exist (is {out} an fdk distill run folder?)")
        run = json.loads(run_file.read_text())
        teacher_path, data = args.teacher or run["teacher"], args.data or run["data"]
        # The run's config is in run.json too: reading it from checkpoint.pt would load the whole bank
        # twice (distill reads the checkpoint again for the state).
        cfg = from_dict(DistillConfig, run["config"])
    else:
        if args.preset is None or args.teacher is None:
            raise FdkError("fdk distill needs --preset NAME and --teacher FILE (or --resume DIR)")
        cfg = override(get_preset(args.preset), args.set)
        teacher_path, data = args.teacher, _data_root(args.data)
        out = Path(args.out or Path("runs") / args.preset.replace("/", "_"))
        out.mkdir(parents=True, exist_ok=True)
        run = {"preset": args.preset, "teacher": teacher_path, "data": data, "config": to_dict(cfg)}
        (out / "run.json").write_text(json.dumps(run) + "\n")
    from fdk.data import dataset_info

    teacher = load_model(teacher_path, cfg.teacher, dataset_info(cfg.dataset).num_classes)
    test = None
    if data:
        test = real_test_split(data) if cfg.dataset == "cifar10" else None
        if test is None:
            from fdk.data import load_split

            test = load_split(data, cfg.dataset, "test")
    result = distill(cfg, teacher, test, out, args.device, resume=bool(args.resume), progress=not args.no_progress)
    keys = (
        "final_top1",
        "best_top1",
        "best_epoch",
        "synth_seconds",
        "synth_gpu_hours",
        "kd_seconds",
        "wall_seconds",
        "images_synthesized",
    )
    print(json.dumps({"out": str(out), **{k: result[k] for k in keys}}))


def cmd_presets(args) -> None:
    from fdk.config import to_dict
    from fdk.presets import PRESETS, get_preset

    if args.name:
        print(json.dumps(to_dict(get_preset(args.name)), indent=1))
        return
    for name, cfg in PRESETS.items():
        print(f"{name:40s} {cfg.method:13s} k={cfg.synth_steps:<5d} epochs={cfg.epochs}")


def cmd_stats(args) -> None:
    from fdk.stats import compute_and_save

    root = _data_root(args.data)
    if root is None:
        raise FdkError("no data: pass --data DIR (the real training split is read once) or set FDK_DATA")
    path, stats = compute_and_save(args.teacher, root, args.dataset, args.split, args.arch, args.device)
    print(json.dumps({"out": str(path), "features": stats["mean"].numel(), "images": int(stats["class_counts"].sum())}))


def cmd_demo(args) -> None:
    from fdk.demo import run_demo

    run_demo(args.out, args.preset, args.data, args.device, not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    from fdk.train import RECIPES, TeacherConfig

    parser = argparse.ArgumentParser(prog="fdk", description="Fast data-free knowledge distillation workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "train-teacher",
        help="train a zoo model on a labelled dataset",
        description="Train a zoo model (SGD + cosine, device-side augmentation); writes "
        "OUT/metrics.jsonl, OUT/checkpoint.pt (every epoch) and OUT/model.safetensors.",
        epilog="Recipes:\n" + "\n".join(f"  {k}: {v}" for k, v in RECIPES.items()),
        formatter_class=formatter,
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), default="gpu", help="base settings (default gpu)")
    p.add_argument("--data", help="dataset folder (class folders or torchvision files); default $FDK_DATA")
    p.add_argument("--out", type=Path, required=True, help="run folder for logs, checkpoints and weights")
    p.add_argument("--device", default="auto", help="auto (accelerator if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(p, TeacherConfig)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 of a checkpoint on a dataset split",
        description="Top-1/top-5 accuracy and CE loss of weights (.safetensors or upstream .pth) on a split.",
    )
    p.add_argument("--weights", required=True, help=".safetensors or .pth file (upstream {'state_dict': ...} works)")
    p.add_argument("--arch", help="zoo model name; default: the file's metadata")
    p.add_argument("--num-classes", type=int, help="default: the dataset's class count")
    p.add_argument("--dataset", help="dataset name; default: the file's metadata, else cifar10")
    p.add_argument("--data", help="dataset folder; default $FDK_DATA")
    p.add_argument("--split", default="test", help="split folder name (default test)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when missing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=cmd_evaluate)

    from fdk.presets import DistillConfig

    p = sub.add_parser(
        "distill",
        help="data-free distillation of a teacher into a student (FastDFKD and baselines)",
        description="Distil a teacher without data. Writes OUT/metrics.jsonl (one line per epoch: losses, "
        "test accuracy, synthesis/KD/eval seconds), OUT/checkpoint.pt (every epoch, resumable), "
        "OUT/samples.png and OUT/student.safetensors.",
        epilog="Presets: `fdk presets` lists them, e.g. cifar10/wrn40_2-wrn16_2/fast5, smoke/fast_meta.\n"
        "Any DistillConfig field can be overridden, e.g. --set kd_steps=100 --set synth_steps=2:\n"
        + describe(DistillConfig),
        formatter_class=formatter,
    )
    p.add_argument("--preset", help="named configuration (fdk presets lists them)")
    p.add_argument("--teacher", help="teacher weights: .safetensors or upstream .pth ({'state_dict': ...})")
    p.add_argument("--data", help="real dataset folder, only for evaluation (default $FDK_DATA; none: no eval)")
    p.add_argument("--out", help="run folder (default runs/<preset>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last epoch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("presets", help="list the named distillation presets, or show one")
    p.add_argument("name", nargs="?", help="show this preset's full configuration")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser(
        "stats",
        help="real-data feature statistics of a teacher, for scoring synthetic images without data",
        description="Run the teacher over a real split once; store the mean, covariance and per-class means of "
        "its penultimate features in data_stats/<dataset>_<arch>_features.safetensors (keyed by the teacher "
        "file's SHA-256). fdk.stats.score_images then gives a Frechet distance and class coverage.",
    )
    p.add_argument("--teacher", required=True, help="teacher weights (.safetensors with metadata, or .pth + --arch)")
    p.add_argument("--arch", help="zoo architecture when the file does not record it")
    p.add_argument("--data", help="dataset folder (default $FDK_DATA)")
    p.add_argument("--dataset", default="cifar10", help="dataset name (default cifar10)")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "demo",
        help="short data-free distillation from the embedded teacher (offline, CPU, minutes)",
        description="Distil the embedded CIFAR-10 resnet20 teacher with a smoke preset; report agreement on "
        "held-out synthetic images and, with $FDK_DATA, real test accuracy; write a sample grid.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--preset", default="smoke/fast_meta", help="preset (default smoke/fast_meta)")
    p.add_argument("--data", help="folder with cifar10/test (default $FDK_DATA)")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except FdkError as error:
        print(f"fdk {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fdk {args.command}: interrupted; the last finished epoch's checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fdk presets | head`: the reader left; stay quiet like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
