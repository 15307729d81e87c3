"""The GPU runbook's jobs. Each is one command of at most about 9 minutes on a lent GPU machine, continues
where the previous command of the same job stopped (the run folders under .gpu/ stay on the machine while
it is warm), and leaves everything worth keeping in one output folder ($OUT: at most 8 files, each under
16 MB): result.json (status, numbers, hardware, the run's config and per-epoch records), log.txt and the
job's artifacts. Every job has a --tiny mode that tests/test_gpu_runbook.py runs on a CPU.

    here, once:  python benchmarks/gpu/runbook.py pack --data ../shared/data/cifar10     # .gpu/stage/*
    there:       PYTHONPATH=. python3 benchmarks/gpu/runbook.py teacher --arch wrn40_2   # J1 (a few calls)
                 PYTHONPATH=. python3 benchmarks/gpu/runbook.py distill --preset cifar10/wrn40_2-wrn16_2/fast5
                 PYTHONPATH=. python3 benchmarks/gpu/runbook.py engine                   # J3

benchmarks/gpu/README.md says which files each call carries and what to commit; STATUS.md what is next.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fdk
from fdk.checkpoint import save_weights, write_json
from fdk.config import from_dict, override
from fdk.data import ImageTensors, pack_split
from fdk.run import machine_info, read_run

REPO = Path(__file__).resolve().parents[2]
MOSAIC_COLUMNS = 100
MAX_OUT_BYTES = 15 * 2**20  # $OUT takes files up to 16 MB: larger artifacts travel in parts of 15 MiB
FIT_RESERVE_SECONDS = 60  # teacher --fit: the feature statistics, the weights and the margin of time_is_up


# --- staging: CIFAR-10 as lossless WebP mosaics, in three carry groups of under 64 MiB ----------------------


def pack(data_root, work: Path, chunk: int = 5000) -> dict:
    """Write CIFAR-10 as WebP-lossless mosaics of `chunk` images (1.8x smaller than raw pixels, 1.3x smaller
    than PNG files) with their labels and checksums, grouped for carrying: train-a, train-b, test."""
    sizes = {}
    for split in ("train", "test"):
        data = fdk.load_split(data_root, "cifar10", split)
        chunks = (len(data) + chunk - 1) // chunk
        for i in range(chunks):
            # three groups a call can carry each (64 MiB): train-a (chunks 0-5 of 10), train-b, test
            group = "test" if split == "test" else ("train-a" if i < 0.6 * chunks else "train-b")
            folder = work / "stage" / group
            folder.mkdir(parents=True, exist_ok=True)
            images = data.images[i * chunk : (i + 1) * chunk]
            name = f"cifar10-{split}-{i:02d}"
            _mosaic(images).save(folder / f"{name}.webp", "WEBP", lossless=True, quality=100, method=4)
            meta = {"split": split, "index": i, "chunks": chunks, "count": len(images), "classes": list(data.classes),
                    "labels": data.labels[i * chunk : (i + 1) * chunk].tolist(), "sha256": _digest(images)}  # fmt: skip
            (folder / f"{name}.json").write_text(json.dumps(meta))
    for group in sorted((work / "stage").iterdir()):
        sizes[group.name] = sum(p.stat().st_size for p in group.iterdir()) / 2**20
    return sizes


def _mosaic(images: torch.Tensor) -> Image.Image:
    """(N, 3, 32, 32) uint8 -> one RGB image, MOSAIC_COLUMNS images per row (the last row zero-padded)."""
    n, c, h, w = images.shape
    rows = (n + MOSAIC_COLUMNS - 1) // MOSAIC_COLUMNS
    padded = torch.zeros(rows * MOSAIC_COLUMNS, c, h, w, dtype=torch.uint8)
    padded[:n] = images
    grid = padded.view(rows, MOSAIC_COLUMNS, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, MOSAIC_COLUMNS * w, c)
    return Image.fromarray(grid.numpy())


def _unmosaic(picture: Image.Image, count: int) -> torch.Tensor:
    grid = torch.from_numpy(np.asarray(picture.convert("RGB")).copy())  # (rows*32, cols*32, 3)
    rows = grid.shape[0] // 32
    images = grid.view(rows, 32, MOSAIC_COLUMNS, 32, 3).permute(0, 2, 4, 1, 3).reshape(-1, 3, 32, 32)
    return images[:count].contiguous()


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def unpack(work: Path, split: str) -> bool:
    """Decode the staged chunks of a split into work/cifar10 (packed parts that fdk.load_split reads),
    checking every chunk's checksum. False, with what is missing printed, while chunks are still to come."""
    target = work / "cifar10"
    if list(target.glob(f"{split}-part-*.safetensors")):
        return True
    metas = sorted((work / "stage").glob(f"*/cifar10-{split}-*.json"))
    expected = json.loads(metas[0].read_text())["chunks"] if metas else None
    if not metas or len(metas) != expected:
        print(
            f"{split}: {len(metas)} of {expected or '?'} chunks staged; carry the missing .gpu/stage groups", flush=True
        )
        return False
    images, labels, classes = [], [], None
    for path in metas:
        meta = json.loads(path.read_text())
        with Image.open(path.with_suffix(".webp")) as picture:
            chunk = _unmosaic(picture, meta["count"])
        if _digest(chunk) != meta["sha256"]:
            raise SystemExit(f"{path.with_suffix('.webp')} does not decode to the packed pixels: stage it again")
        images.append(chunk)
        labels += meta["labels"]
        classes = tuple(meta["classes"])
    pack_split(ImageTensors(torch.cat(images), torch.tensor(labels), classes), target, split, part_mib=1024)
    print(f"{split}: unpacked {sum(len(x) for x in images)} images into {target}", flush=True)
    return True


# --- the shared frame of a job: log, deadline, result, outputs ------------------------------------------------


class Job:
    """One command of a job: tees its output into out/log.txt and writes out/result.json at the end."""

    def __init__(self, name: str, out: Path, minutes: float, tiny: bool):
        self.name, self.out, self.tiny = name, out, tiny
        self.budget, self.started = 60 * minutes, time.perf_counter()
        self.result = {"job": name, "status": "started", "date": time.strftime("%Y-%m-%d %H:%M"), "tiny": tiny}
        out.mkdir(parents=True, exist_ok=True)
        self._log = open(out / "log.txt", "a")
        self._epoch_started = self.started

    def print(self, *parts) -> None:
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        self._log.write(text + "\n")
        self._log.flush()

    def time_is_up(self, record: dict) -> bool:
        """An on_epoch callback: stop (resumably) when another epoch like the last would overrun the budget."""
        now = time.perf_counter()
        last, self._epoch_started = now - self._epoch_started, now
        self.print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        return now - self.started + 1.5 * last > self.budget

    def keep(self, path: Path, name: str | None = None) -> list[str]:
        """Copy an artifact into out; larger than $OUT takes, it goes in numbered parts (`cat` joins them)."""
        name = name or path.name
        data = path.read_bytes()
        if len(data) <= MAX_OUT_BYTES:
            shutil.copyfile(path, self.out / name)
            return [name]
        parts = []
        for i in range(0, len(data), MAX_OUT_BYTES):
            part = f"{name}.part{i // MAX_OUT_BYTES:02d}"
            (self.out / part).write_bytes(data[i : i + MAX_OUT_BYTES])
            parts.append(part)
        return parts

    def finish(self, device) -> dict:
        self.result["call_seconds"] = time.perf_counter() - self.started
        self.result["machine"] = {"device": str(device), **machine_info(device)}
        write_json(self.result, self.out / "result.json")
        self.print(f"{self.name}: {self.result['status']} after {self.result['call_seconds']:.0f} s")
        self._log.close()
        return self.result


def _run_record(folder: Path) -> dict:
    record = read_run(folder)
    return {"run": record["info"], "epochs": record["epochs"], "summary": record["summary"]}


def _job_seconds(folder: Path, seconds: float) -> float:
    """Wall seconds of every command of this job so far (the end-to-end time, start-ups included)."""
    path = folder / "job_seconds.json"
    total = (json.loads(path.read_text())["seconds"] if path.exists() else 0.0) + seconds
    path.write_text(json.dumps({"seconds": total}))
    return total


# --- the jobs ---------------------------------------------------------------------------------------------


def job_teacher(args, job: Job, device) -> None:
    """J1 (wrn40_2) and J4's teacher (resnet34): `fdk train-teacher --recipe gpu`, resumed across calls;
    when finished, the weights and the teacher's real-data feature statistics (data_stats/)."""
    work = args.work
    if not (unpack(work, "train") and unpack(work, "test")):
        job.result["status"] = "staging"
        return
    cfg = override(fdk.RECIPES[args.recipe], [f"arch={args.arch}", *args.set])
    if args.tiny:
        cfg = override(cfg, ["epochs=3", "batch_size=16"])
    folder = work / "runs" / f"teacher-{cfg.arch}"
    resume = (folder / "checkpoint.pt").exists()
    if args.fit and resume:
        cfg = from_dict(type(cfg), read_run(folder)["info"]["config"])  # the epochs fitted by the first call
    elif args.fit:
        cfg = _fit_epochs(cfg, job, work, device)
    job.print(f"teacher {cfg.arch}: {'resuming' if resume else 'starting'} {cfg.epochs} epochs in {folder}")
    fdk.train_teacher(cfg, work / "cifar10", folder, device, resume=resume, progress=False, on_epoch=job.time_is_up,
                      overwrite=not resume)  # fmt: skip
    job.result.update(_run_record(folder))
    job.result["job_seconds"] = _job_seconds(folder, time.perf_counter() - job.started)
    if job.result["summary"] is None:
        job.result["status"] = "running: run the same command again (warm machine) to continue"
        return
    weights = folder / "model.safetensors"
    stats = folder / f"cifar10_{cfg.arch}_features.safetensors"
    fdk.stats.compute_and_save(weights, work / "cifar10", "cifar10", "train", cfg.arch, device, path=stats)
    job.result["files"] = job.keep(weights, f"cifar10_{cfg.arch}.safetensors") + job.keep(stats)
    job.result["status"] = "done"


def _fit_epochs(cfg, job: Job, work: Path, device):
    """--fit: a window too short for the recipe's schedule (a 15-minute lease) gets the same recipe over
    fewer epochs, as many as fit this command: time two epochs of a throwaway run, then leave a minute
    for the statistics and the weights. The cosine decay ends at the fitted epoch count."""
    probe = work / "runs" / f"probe-{cfg.arch}"
    shutil.rmtree(probe, ignore_errors=True)
    started = time.perf_counter()
    fdk.train_teacher(override(cfg, ["epochs=2"]), work / "cifar10", probe, device, progress=False)
    epoch_seconds = (time.perf_counter() - started) / 2  # loading and warm-up included: on the safe side
    shutil.rmtree(probe)
    left = job.budget - (time.perf_counter() - job.started) - FIT_RESERVE_SECONDS
    epochs = max(1, min(cfg.epochs, int(left / epoch_seconds)))
    job.result["fit"] = {"recipe_epochs": cfg.epochs, "epochs": epochs, "probe_epoch_seconds": epoch_seconds}
    job.print(f"fit: {epoch_seconds:.1f} s per epoch measured, {epochs} of the recipe's {cfg.epochs} epochs fit")
    return override(cfg, [f"epochs={epochs}"])


def job_distill(args, job: Job, device) -> None:
    """J2 (and J4's distillation): a paper preset at its full schedule, resumed across calls; the end
    record has final and best top-1, synthesis hours, KD seconds and the images synthesised."""
    work = args.work
    if not unpack(work, "test"):
        job.result["status"] = "staging"
        return
    cfg = override(fdk.get_preset(args.preset), args.set)
    teacher_file = Path(args.teacher_file or REPO / "weights" / f"cifar10_{cfg.teacher}.safetensors")
    if args.tiny:
        teacher_file = fdk.EMBEDDED_TEACHER
        cfg = override(cfg, ["teacher=resnet20", "student=resnet8", "epochs=3", "warmup=1", "ep_steps=2",
                             "kd_steps=2", "synth_batch_size=8", "kd_batch_size=8", "ngf=8", "nz=16"])  # fmt: skip
    teacher = fdk.load_model(teacher_file, cfg.teacher)
    test = fdk.load_split(work / "cifar10", "cifar10", "test")
    folder = work / "runs" / args.preset.replace("/", "_")
    resume = (folder / "checkpoint.pt").exists()
    job.print(f"distill {args.preset}: {'resuming' if resume else 'starting'} in {folder}")
    # the runbook's own work folder: a start that died before its first checkpoint is replaced
    result = fdk.distill(cfg, teacher, test, folder, device=device, resume=resume, overwrite=not resume,
                         progress=False, on_epoch=job.time_is_up, run_info={"preset": args.preset})  # fmt: skip
    job.result.update(_run_record(folder))
    job.result["job_seconds"] = _job_seconds(folder, time.perf_counter() - job.started)
    if job.result["summary"] is None:
        job.result["status"] = "running: run the same command again (warm machine) to continue"
        # The student so far comes back too: the run folder does not outlive the machine (tests check it on
        # real CIFAR-10, tests/test_gpu_students.py).
        last = job.result["epochs"][-1]
        partial = job.out / f"{folder.name}.epoch{last['epoch']}.student.safetensors"
        save_weights(result.student.state_dict(), partial, arch=cfg.student, epoch=last["epoch"],
                     test_top1=last.get("test_top1"), **fdk.dataset_spec(cfg.dataset).to_metadata())  # fmt: skip
        job.result["files"] = [partial.name]
        return
    job.result["files"] = job.keep(folder / "student.safetensors", f"{folder.name}.student.safetensors")
    job.result["status"] = "done"


def job_engine(args, job: Job, device) -> None:
    """J3: benchmarks/engine.py (synthesis per image vs DeepInv-2k, KD throughput per engine setting) and
    benchmarks/profile_epoch.py, at the paper's sizes (--tiny: small ones)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import engine
    import profile_epoch

    if args.tiny:
        sizes = ["--batch", "8", "--calls", "1", "--deepinv-steps", "2", "--kd-steps", "2", "--pool", "64",
                 "--e2e-epochs", "1", "--workers", "1", "--teacher", "resnet8", "--student", "resnet8"]  # fmt: skip
        profile = [
            "--preset",
            "smoke/fast_meta",
            "--batch",
            "8",
            "--kd-steps",
            "2",
            "--bank",
            "64",
            "--eval-images",
            "100",
        ]
    else:
        sizes = ["--batch", "256", "--kd-steps", "400", "--pool", "5376", "--workers", "8"]
        profile = []
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        engine.main(["--device", str(device), *sizes, "--kd-variants", "--out", str(job.out / "engine.json")])
        profile_epoch.main(["--device", str(device), *profile, "--out", str(job.out / "profile.json")])
    job.print(captured.getvalue())
    job.result["files"] = ["engine.json", "profile.json"]
    job.result["status"] = "done"


def job_segmentation(args, job: Job, device) -> None:
    """J5: benchmarks/segmentation.py: synthesis per image (Fast-2/5/10) and KD images/s at 128 px for
    DeepLabV3-R50 -> DeepLabV3-MobileNetV2 and at 64 px for the CIFAR-scenes pair (docs/method.md §12)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import segmentation

    sizes = ["--batch", "2", "--calls", "1", "--kd-steps", "1", "--ks", "2", "--datasets", "cifar_scenes"]
    if not args.tiny:
        sizes = ["--batch", "64", "--calls", "3", "--kd-steps", "50"]
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        segmentation.main(["--device", str(device), *sizes, "--out", str(job.out / "segmentation.json")])
    job.print(captured.getvalue())
    job.result["files"] = ["segmentation.json"]
    job.result["status"] = "done"


def job_imagenet(args, job: Job, device) -> None:
    """J6: benchmarks/imagenet.py: synthesis and KD images/s and peak memory at 224 px for batch 50/100/200 and
    k=10/50, the engine modes (fp32, bf16, channels_last, compile) and the ratio to upstream's 4.4 images/s."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import imagenet

    sizes = ["--size", "32", "--batches", "2", "--ks", "1", "--calls", "1", "--kd-steps", "1"]
    if not args.tiny:
        sizes = ["--compile"]
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        imagenet.main(["--device", str(device), *sizes, "--out", str(job.out / "imagenet.json")])
    job.print(captured.getvalue())
    job.result["files"] = ["imagenet.json"]
    job.result["status"] = "done"


def job_methods(args, job: Job, device) -> None:
    """J8: benchmarks/methods.py: every Table-1 method (Fast-2/5/10, DeepInv-2k, CMI-500/5, DAFL, ZSKT, DFQ,
    DFAD) at batch 256: seconds per call and per image, KD images/s, the paper schedule's synthesis hours."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import methods

    sizes = ["--batch", "4", "--calls", "1", "--scaled-steps", "1", "--kd-steps", "1", "--methods", "fast2,dfad,cmi5"]
    if not args.tiny:
        sizes = ["--batch", "256", "--calls", "3", "--scaled-steps", "20", "--kd-steps", "50"]
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        methods.main(["--device", str(device), *sizes, "--out", str(job.out / "methods.json")])
    job.print(captured.getvalue())
    job.result["files"] = ["methods.json"]
    job.result["status"] = "done"


def job_ddp(args, job: Job, device) -> None:
    """J7: the torchrun path on one GPU: `torchrun --nproc_per_node 1 -m fdk distill` (NCCL, the student in
    DDP) on the ImageNet preset at batch 100, k=50 for a few calls, from a random ResNet-50 (cost only)."""
    import subprocess

    import torchvision

    work = args.work / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    teacher = work / "resnet50-random.pth"
    if not teacher.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50().state_dict(), teacher)
    sets = ["epochs=1", "ep_steps=300", "kd_steps=100", "amp=bf16"]  # 3 calls of 100 images, k=50, + KD
    if args.tiny:
        sets = ["epochs=1", "ep_steps=2", "kd_steps=1", "synth_batch_size=2", "kd_batch_size=2", "synth_steps=1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "fdk",
               "distill", "--preset", "imagenet/resnet50-resnet18/fast50", "--teacher", str(teacher), "--data", "",
               "--out", str(work / "run"), "--overwrite", "--device", str(device), "--no-progress",
               *[a for s in [*sets, *args.set] for a in ("--set", s)]]  # fmt: skip
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    job.print(out.stdout[-4000:], out.stderr[-4000:])
    if out.returncode != 0:
        raise RuntimeError(f"torchrun exited {out.returncode}")
    record = _run_record(work / "run")
    job.result.update(backend=record["run"]["backend"], world_size=record["run"]["world_size"],
                      summary=record["summary"])  # fmt: skip
    job.result["status"] = "done"


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("pack", help="here: CIFAR-10 as lossless WebP mosaics in .gpu/stage/{train-a,train-b,test}")
    p.add_argument("--data", required=True, help="CIFAR-10 (class folders, torchvision files or packed parts)")
    p.add_argument("--chunk", type=int, default=5000, help="images per mosaic (5000: the groups of the README)")
    jobs = (
        ("teacher", job_teacher),
        ("distill", job_distill),
        ("engine", job_engine),
        ("segmentation", job_segmentation),
        ("imagenet", job_imagenet),
        ("ddp", job_ddp),
        ("methods", job_methods),
    )
    for name, func in jobs:
        p = sub.add_parser(name, help=func.__doc__.splitlines()[0])
        p.set_defaults(func=func)
        p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")), help="default $OUT")
        p.add_argument("--minutes", type=float, default=8.5, help="stop (resumably) before this wall time")
        p.add_argument("--device", default="auto")
        p.add_argument("--tiny", action="store_true", help="tiny sizes on tiny data, for the CPU test")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    sub.choices["teacher"].add_argument("--arch", default="wrn40_2")
    sub.choices["teacher"].add_argument("--recipe", default="gpu")
    sub.choices["teacher"].add_argument(
        "--fit", action="store_true", help="as many of the recipe's epochs as fit this one command (timed first)"
    )
    sub.choices["distill"].add_argument("--preset", default="cifar10/wrn40_2-wrn16_2/fast5")
    sub.choices["distill"].add_argument("--teacher-file", help="default weights/cifar10_<teacher>.safetensors")
    for p in sub.choices.values():
        p.add_argument("--work", type=Path, default=REPO / ".gpu", help="run folders and staged data (default .gpu)")
    args = parser.parse_args(argv)
    if args.job == "pack":
        sizes = pack(args.data, args.work, args.chunk)
        print(json.dumps({group: f"{mib:.1f} MiB" for group, mib in sizes.items()}))
        return None
    device = fdk.resolve_device(args.device)
    job = Job(args.job, args.out, args.minutes, args.tiny)
    try:
        args.func(args, job, device)
    except Exception as error:  # the log and result.json must come back even then
        job.result["status"] = f"failed: {type(error).__name__}: {error}"
        job.print(job.result["status"])
        raise
    finally:
        result = job.finish(device)
    return result


if __name__ == "__main__":
    main()
