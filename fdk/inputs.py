"""Input contracts: what a teacher expects as input and gives as output (docs/method.md §9).

A dataset defines one in `data_stats/<name>.json` (`dataset_spec`); a teacher's weights can carry their
own in their metadata (`fdk.load_model` attaches it as `model.input_spec`).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fdk.utils import ROOT, FdkError

DATA_STATS = Path(os.environ.get("FDK_DATA_STATS", ROOT / "data_stats"))
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class InputSpec:
    """What a classifier expects as input and gives as output: its input contract.

    A dataset defines one (`data_stats/<name>.json`, `dataset_spec(name)`); a teacher carries its own in
    its safetensors metadata, or the caller passes one, so a teacher trained with other normalisation
    constants is inverted in its own input space (docs/method.md §9).
    """

    name: str  # the dataset (or a label for a custom teacher)
    num_classes: int
    image_size: int  # square images, side in pixels
    mean: tuple[float, ...]  # per-channel normalisation applied after augmentation, in [0, 1] pixel units
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()  # class names; empty means "0", "1", ...
    task: str = "classification"  # or "segmentation": logits (B, C, H, W), one class per pixel (§12)
    ignore_index: int = 255  # segmentation: the label of unlabelled pixels, left out of losses and metrics

    def __post_init__(self):
        if self.task not in TASKS:
            raise FdkError(
                f"input spec {self.name!r}: task={self.task!r} is not valid; choose one of {', '.join(TASKS)}"
            )
        if len(self.mean) != len(self.std) or not all(s > 0 for s in self.std):
            raise FdkError(
                f"input spec {self.name!r}: mean {self.mean} and std {self.std} need one positive std per mean"
            )
        if self.classes and len(self.classes) != self.num_classes:
            raise FdkError(
                f"input spec {self.name!r}: {len(self.classes)} class names for {self.num_classes} classes; "
                "give one name per class or none"
            )

    @property
    def dense(self) -> bool:
        """True for segmentation: one prediction per pixel instead of one per image."""
        return self.task == "segmentation"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes or tuple(str(i) for i in range(self.num_classes))

    def to_metadata(self) -> dict:
        """The fields as plain JSON values, for safetensors metadata (`fdk.models.load_model` reads them back)."""
        return {"dataset": self.name, "num_classes": self.num_classes, "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "classes": list(self.classes),
                "task": self.task, "ignore_index": self.ignore_index}  # fmt: skip

    @classmethod
    def from_metadata(cls, meta: dict) -> "InputSpec | None":
        """The spec stored by `to_metadata`; older files with only a dataset name get that dataset's spec."""
        if {"mean", "std", "image_size", "num_classes"} <= meta.keys():
            return cls(
                name=meta.get("dataset", "custom"),
                num_classes=int(meta["num_classes"]),
                image_size=int(meta["image_size"]),
                mean=tuple(meta["mean"]),
                std=tuple(meta["std"]),
                classes=tuple(meta.get("classes") or ()),
                task=meta.get("task", "classification"),
                ignore_index=int(meta.get("ignore_index", 255)),
            )
        if "dataset" in meta:
            return dataset_spec(meta["dataset"])
        return None


def known_datasets() -> list[str]:
    return sorted(p.stem for p in DATA_STATS.glob("*.json"))


def dataset_spec(name: str) -> InputSpec:
    """The input contract of a dataset, from `data_stats/<name>.json`."""
    path = DATA_STATS / f"{name}.json"
    if not path.exists():
        raise FdkError(f"unknown dataset {name!r}: no {path}; known datasets: {', '.join(known_datasets())}")
    raw = json.loads(path.read_text())
    return InputSpec(
        name=raw["name"],
        num_classes=raw["num_classes"],
        image_size=raw["image_size"],
        mean=tuple(raw["mean"]),
        std=tuple(raw["std"]),
        classes=tuple(raw["classes"]),
        task=raw.get("task", "classification"),
        ignore_index=raw.get("ignore_index", 255),
    )


def teacher_inputs(teacher, dataset: str, inputs: InputSpec | None = None) -> InputSpec:
    """The input contract to invert `teacher` in, checked against the run's dataset and the teacher's outputs.

    Given `inputs` wins; else the one `fdk.load_model` attached from the weights' metadata; else the spec
    of `dataset`. A teacher whose metadata names another dataset, or whose output size differs from the
    class count, is an error that names the fix.
    """
    attached = getattr(teacher, "input_spec", None)
    if inputs is None and attached is not None and attached.name != dataset:
        raise FdkError(
            f"the teacher was trained on {attached.name} (its weights' metadata) but the config says "
            f"dataset={dataset}; use a {attached.name} preset or --set dataset={attached.name}"
        )
    spec = inputs or attached or dataset_spec(dataset)
    probe = torch.zeros(2, len(spec.mean), spec.image_size, spec.image_size, device=next(teacher.parameters()).device)
    was_training = teacher.training
    with torch.no_grad():
        outputs = teacher.eval()(probe).shape[1]
    teacher.train(was_training)
    if outputs != spec.num_classes:
        fits = [name for name in known_datasets() if dataset_spec(name).num_classes == outputs]
        fix = f"--set dataset={fits[0]}" if fits else "pass the teacher's own InputSpec (distill(..., inputs=...))"
        raise FdkError(f"the teacher outputs {outputs} classes but {spec.name} has {spec.num_classes}; {fix}")
    return spec
