"""Jobs on files, as the CLI (and papermill or shell scripts) run them: each checks every input before
it writes anything, then runs, and `resume(DIR)` continues any of them from its run folder.

    distill_job(cfg, "teacher.pth", data_root, "runs/x")   load + check the teacher, find the test split, distil
    train_teacher_job(cfg, data_root, "runs/t")            train a zoo model (fdk.train)
    resume("runs/x")                                       continue whichever job ran there, with its config
"""

import os
from pathlib import Path

from fdk.checkpoint import file_sha256, read_metadata
from fdk.config import from_dict
from fdk.distill import DistillResult, distill
from fdk.models import load_model
from fdk.models.imagenet import TORCHVISION_NAMES, torchvision_weights_file
from fdk.presets import DistillConfig
from fdk.run import RunFolder
from fdk.segdata import find_task_split, load_task_split
from fdk.train import TeacherConfig, train_teacher
from fdk.utils import FdkError

TORCHVISION_PREFIX = "torchvision:"  # --teacher torchvision:NAME: torchvision's ImageNet weights by enum name


def load_teacher_for(cfg: DistillConfig, teacher_file):
    """The teacher of a distillation config from a weights file; its recorded architecture must match.

    `torchvision:NAME` (e.g. torchvision:IMAGENET1K_V1, upstream's resnet50 teacher) names torchvision's
    ImageNet weights: they resolve to the file in torch.hub's cache (downloaded once), and that file is what
    the run records, so `resume` finds it without the network."""
    if str(teacher_file).startswith(TORCHVISION_PREFIX):
        name = str(teacher_file).removeprefix(TORCHVISION_PREFIX)
        if cfg.teacher not in TORCHVISION_NAMES:
            raise FdkError(
                f"{teacher_file} names torchvision's ImageNet weights but the config's teacher is {cfg.teacher}; "
                f"--set teacher= one of {', '.join(TORCHVISION_NAMES)}, or pass a weights file for {cfg.teacher}"
            )
        teacher_file = torchvision_weights_file(cfg.teacher, name or "DEFAULT")
    recorded = read_metadata(teacher_file).get("arch")
    if recorded is not None and recorded != cfg.teacher:
        raise FdkError(
            f"{teacher_file} holds a {recorded} (its metadata) but the config's teacher is {cfg.teacher}; "
            f"--set teacher={recorded}, or pick a preset for that teacher"
        )
    return load_model(teacher_file, cfg.teacher)


def test_split_for(dataset: str, data_root):
    """The real test split for evaluation: required when data_root is given, optional from $FDK_DATA."""
    if data_root:
        return load_task_split(data_root, dataset, "test")
    return find_task_split(os.environ.get("FDK_DATA", ""), dataset, "test") if data_root is None else None


def distill_job(cfg: DistillConfig, teacher_file, data_root, out_dir, device="auto", progress=True,
                overwrite=False, **info):  # fmt: skip
    """Distil the teacher in `teacher_file`; data_root only serves evaluation (None: $FDK_DATA if it holds
    the split, "": no evaluation). overwrite: replace a run in out_dir. `info` (e.g. the preset's name)
    goes into run.json."""
    teacher = load_teacher_for(cfg, teacher_file)
    test = test_split_for(teacher.input_spec.name if teacher.input_spec else cfg.dataset, data_root)
    data = str(data_root) if data_root else (os.environ.get("FDK_DATA", "") if test is not None else "")
    return distill(cfg, teacher, test, out_dir, device=device, progress=progress, overwrite=overwrite,
                   run_info={"data": data, **info})  # fmt: skip


def train_teacher_job(cfg: TeacherConfig, data_root, out_dir, device="auto", progress=True, overwrite=False) -> dict:
    if not data_root:
        raise FdkError("no data: pass --data DIR (class folders or torchvision files) or set FDK_DATA")
    return train_teacher(cfg, data_root, out_dir, device, progress=progress, overwrite=overwrite)


def resume(out_dir, device="auto", progress=True, job: str | None = None) -> DistillResult | dict:
    """Continue the run in out_dir exactly where its last checkpoint ended, with its own config and files."""
    folder = RunFolder(out_dir)
    info = folder.info()
    if job is not None and info["job"] != job:
        raise FdkError(f"{out_dir} holds a {info['job']} run, not {job}; resume it with fdk {info['job']} --resume")
    if info["job"] == "distill":
        cfg = from_dict(DistillConfig, info["config"])
        teacher_file = info["teacher"]["file"] if info.get("teacher") else None
        if teacher_file is None or not Path(teacher_file).exists():
            raise FdkError(f"cannot resume {out_dir}: its teacher file {teacher_file} is gone; restore it there")
        if file_sha256(teacher_file) != info["teacher"]["sha256"]:
            raise FdkError(f"cannot resume {out_dir}: {teacher_file} changed since the run started (SHA-256 differs)")
        teacher = load_teacher_for(cfg, teacher_file)
        test = load_task_split(info["data"], teacher.input_spec.name, "test") if info.get("data") else None
        return distill(cfg, teacher, test, out_dir, device=device, progress=progress, resume=True)
    cfg = from_dict(TeacherConfig, info["config"])
    return train_teacher(cfg, info["data"], out_dir, device, resume=True, progress=progress)


def evaluate_job(weights, data_root, dataset=None, split="test", arch=None, num_classes=None, download=False,
                 device="auto") -> dict:  # fmt: skip
    """Top-1/top-5 and CE (mIoU, pixel accuracy, per-class IoU for segmentation) of a weights file on a real
    split; dataset defaults to the file's metadata."""
    from fdk.evaluate import evaluate_task
    from fdk.inputs import dataset_spec
    from fdk.utils import resolve_device

    if not data_root:
        raise FdkError("no data: pass --data DIR or set FDK_DATA")
    device = resolve_device(device)
    dataset = dataset or read_metadata(weights).get("dataset", "cifar10")
    spec = dataset_spec(dataset)
    model = load_model(weights, arch, num_classes or spec.num_classes).to(device)
    data = load_task_split(data_root, dataset, split, download=download)
    return {"weights": str(weights), "dataset": dataset, "split": split, **evaluate_task(model, data, spec)}
