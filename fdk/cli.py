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

    parser.epilog = "TeacherConfig fields:\n" + describe(TeacherConfig)
    parser.formatter_class = formatter
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
