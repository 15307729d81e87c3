"""The `fdk` command line: parse, call the library (fdk.jobs), print. One subcommand per job.

    fdk distill --preset cifar10/wrn40_2-wrn16_2/fast5 --teacher T.pth --data $FDK_DATA --out runs/x
    fdk distill --resume runs/x                   (the same for train-teacher: --resume DIR continues)
    fdk train-teacher --recipe cpu --set arch=resnet20 --data $FDK_DATA/cifar10 --out runs/teacher
    fdk evaluate --weights weights/cifar10_resnet20.safetensors --data $FDK_DATA/cifar10
    fdk stats --teacher weights/cifar10_resnet20.safetensors --data $FDK_DATA/cifar10

`--set key=value` overrides a field of the command's config dataclass. Bad input exits with status 2
and one line that names the problem and the fix; nothing is written before every input is checked.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fdk.stop import Stopped
from fdk.utils import FdkError

SUMMARY_KEYS = ("final_top1", "best_top1", "best_epoch", "synth_seconds", "synth_hours", "kd_seconds",
                "wall_seconds", "images_synthesized")  # fmt: skip


def _data(value):
    return os.environ.get("FDK_DATA") if value is None else value


def cmd_train_teacher(args) -> dict:
    from fdk.config import override
    from fdk.jobs import resume, train_teacher_job
    from fdk.train import RECIPES

    if args.resume:
        _check_resume_alone(args)
        return {"out": args.resume, **resume(args.resume, args.device, not args.no_progress, job="train-teacher")}
    if args.out is None:
        raise FdkError("fdk train-teacher needs --out DIR (or --resume DIR)")
    cfg = override(RECIPES[args.recipe], args.set)
    metrics = train_teacher_job(cfg, _data(args.data), args.out, args.device, not args.no_progress, args.overwrite)
    return {"out": args.out, **metrics}


def cmd_distill(args) -> dict:
    from fdk.config import override
    from fdk.jobs import distill_job, resume
    from fdk.presets import get_preset

    if args.resume:
        _check_resume_alone(args)
        result = resume(args.resume, args.device, not args.no_progress, job="distill")
        out = args.resume
    else:
        if args.preset is None or args.teacher is None:
            raise FdkError("fdk distill needs --preset NAME and --teacher FILE (or --resume DIR)")
        cfg = override(get_preset(args.preset), args.set)
        out = args.out or str(Path("runs") / args.preset.replace("/", "_"))
        result = distill_job(cfg, args.teacher, args.data, out, args.device, not args.no_progress, args.overwrite,
                             preset=args.preset)  # fmt: skip
    return {"out": out, **{k: result.summary[k] for k in SUMMARY_KEYS}}


def _check_resume_alone(args) -> None:
    """--resume DIR takes everything from the run folder: flags that would change the run are refused."""
    given = [flag for flag, value in (("--overwrite", args.overwrite), ("--set", args.set), ("--out", args.out))
             if value]  # fmt: skip
    if given:
        raise FdkError(f"--resume DIR continues the run with its own config and folder; drop {', '.join(given)}")


def cmd_evaluate(args) -> dict:
    from fdk.jobs import evaluate_job

    return evaluate_job(args.weights, _data(args.data), args.dataset, args.split, args.arch, args.num_classes,
                        args.download, args.device)  # fmt: skip


def cmd_presets(args):
    from fdk.config import to_dict
    from fdk.presets import PRESETS, get_preset

    if args.name:
        return to_dict(get_preset(args.name))
    for name, cfg in PRESETS.items():
        print(f"{name:52s} {cfg.method:18s} k={cfg.synth_steps:<5d} epochs={cfg.epochs}")
    return None


def cmd_stats(args) -> dict:
    from fdk.stats import compute_and_save

    root = _data(args.data)
    if not root:
        raise FdkError("no data: pass --data DIR (the real training split is read once) or set FDK_DATA")
    path, stats = compute_and_save(args.teacher, root, args.dataset, args.split, args.arch, args.device)
    return {"out": str(path), "features": stats["mean"].numel(), "images": int(stats["class_counts"].sum())}


def cmd_demo(args) -> None:
    from fdk.demo import run_demo

    run_demo(args.out, args.preset, args.data, args.device, not args.no_progress, args.overwrite)


def _common(p, resume: bool = False) -> None:
    p.add_argument("--device", default="auto", help="auto (the accelerator if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if resume:
        p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly, with its saved config")
        p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (its files only)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def build_parser() -> argparse.ArgumentParser:
    from fdk.config import describe
    from fdk.presets import DistillConfig
    from fdk.train import RECIPES, TeacherConfig

    parser = argparse.ArgumentParser(prog="fdk", description="Fast data-free knowledge distillation workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "train-teacher", help="train a zoo model on a labelled dataset", formatter_class=raw,
        description="Train a zoo model (SGD + cosine, device-side augmentation) into a run folder: run.json, "
        "metrics.jsonl, checkpoint.pt (every epoch), model.safetensors.",
        epilog="Recipes:\n" + "\n".join(f"  {k}: {v}" for k, v in RECIPES.items())
        + "\nTeacherConfig fields (--set KEY=VALUE):\n" + describe(TeacherConfig),
    )  # fmt: skip
    p.add_argument("--recipe", choices=sorted(RECIPES), default="gpu", help="base settings (default gpu)")
    p.add_argument(
        "--data", help="dataset folder (class folders, torchvision files or packed parts); default $FDK_DATA"
    )
    p.add_argument("--out", help="run folder for logs, checkpoints and weights")
    _common(p, resume=True)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("evaluate", help="top-1/top-5 of a weights file on a dataset split",
                       description="Top-1/top-5 accuracy and CE loss of weights (.safetensors or upstream .pth).")  # fmt: skip
    p.add_argument("--weights", required=True, help=".safetensors or .pth file (upstream {'state_dict': ...} works)")
    p.add_argument("--arch", help="zoo model name; default: the file's metadata")
    p.add_argument("--num-classes", type=int, help="default: the dataset's class count")
    p.add_argument("--dataset", help="dataset name; default: the file's metadata, else cifar10")
    p.add_argument("--data", help="dataset folder; default $FDK_DATA")
    p.add_argument("--split", default="test", help="split folder name (default test)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when missing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "distill", help="data-free distillation of a teacher into a student (FastDFKD and baselines)",
        formatter_class=raw,
        description="Distil a teacher without data into a run folder: run.json, metrics.jsonl (one line per "
        "epoch: losses, test accuracy, synthesis/KD/eval seconds), checkpoint.pt + bank.u8 (every epoch, "
        "resumable), samples.png, student.safetensors.",
        epilog="Presets: `fdk presets` lists them, e.g. cifar10/wrn40_2-wrn16_2/fast5, smoke/fast_meta.\n"
        "Several GPUs: torchrun --nproc_per_node N -m fdk distill ... (docs/method.md §14).\n"
        "DistillConfig fields (--set KEY=VALUE, e.g. --set kd_steps=100 --set synth_steps=2):\n"
        + describe(DistillConfig),
    )  # fmt: skip
    p.add_argument("--preset", help="named configuration (fdk presets lists them)")
    p.add_argument("--teacher", help="teacher weights: .safetensors, upstream .pth ({'state_dict': ...}), a "
                   "torchvision .pth, or torchvision:NAME (ImageNet teachers: download once, e.g. torchvision:IMAGENET1K_V1)")
    p.add_argument("--data", help='real data for evaluation only (default $FDK_DATA when it holds the split; "": none)')
    p.add_argument("--out", help="run folder (default runs/<preset>)")
    _common(p, resume=True)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("presets", help="list the named distillation presets, or show one")
    p.add_argument("name", nargs="?", help="show this preset's full configuration")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser(
        "stats", help="real-data feature statistics of a teacher, for scoring synthetic images without data",
        description="Run the teacher over a real split once; store the mean, covariance and per-class means of "
        "its penultimate features in data_stats/<dataset>_<arch>_features.safetensors (keyed by the teacher "
        "file's SHA-256). fdk.stats.score_images then gives a Frechet distance and class coverage.",
    )  # fmt: skip
    p.add_argument("--teacher", required=True, help="teacher weights (.safetensors with metadata, or .pth + --arch)")
    p.add_argument("--arch", help="zoo architecture when the file does not record it")
    p.add_argument("--data", help="dataset folder (default $FDK_DATA)")
    p.add_argument("--dataset", default="cifar10", help="dataset name (default cifar10)")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "demo", help="short data-free distillation from the embedded teacher (offline, CPU, minutes)",
        description="Distil the embedded CIFAR-10 resnet20 teacher with a smoke preset; report agreement on "
        "held-out synthetic images and, with $FDK_DATA, real test accuracy; write a sample grid.",
    )  # fmt: skip
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--preset", default="smoke/fast_meta", help="preset (default smoke/fast_meta)")
    p.add_argument("--data", help="folder with cifar10/test (default $FDK_DATA)")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out that is not an earlier demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if result is not None and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
            print(json.dumps(result, indent=1 if args.command == "presets" else None))
    except FdkError as error:
        message = " ".join(str(error).split())  # one line, whatever the message's layout
        print(f"fdk {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Stopped as stopped:  # SIGTERM / SIGINT: checkpointed where it stopped, or at once on a second signal
        print(f"fdk {args.command}: {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print(f"fdk {args.command}: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fdk presets | head`: the reader left; stay quiet like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
