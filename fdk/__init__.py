"""fdk: a workbench for fast data-free knowledge distillation (FastDFKD, Fang et al., AAAI 2022).

The public API, in the order a run uses it (docs/method.md explains the method):

    teacher = fdk.load_model("weights/cifar10_resnet20.safetensors")   # or fdk.create_model("wrn40_2", 10)
    cfg = fdk.get_preset("smoke/fast_meta")                             # a frozen DistillConfig
    test = fdk.load_split(data_root, "cifar10", "test")                 # optional: real data for evaluation
    result = fdk.distill(cfg, teacher, test, out_dir="runs/mine")
    result.summary["final_top1"], result.student, result.bank
    # out_dir holding a run: refused unless resume=True or overwrite=True; SIGTERM/Ctrl-C: fdk.Stopped, resumable

    synthesizer = fdk.make_synthesizer(cfg, teacher)                    # one method on its own
    batch = synthesizer.synthesize(student)                             # a call of a run
    preview = synthesizer.sample()                                      # the same, changing nothing

Segmentation (docs/method.md §12): the same calls with a dense teacher and a SegTensors split, e.g.
`fdk.load_model(fdk.EMBEDDED_SEG_TEACHER)`, `fdk.get_preset("smoke/segmentation")`,
`fdk.load_task_split(data_root, "cifar_scenes", "test")`; runs report `final_miou`.

ImageNet (docs/method.md §13, §14): `fdk.get_preset("imagenet/resnet50-resnet18/fast50")`, a torchvision
teacher (`fdk.create_model("resnet50_imagenet", 1000, weights="path/to/resnet50-19c8e357.pth")`),
`fdk.load_imagenet_val(root, limit=...)`, `fdk.synthesis_cost` / `fdk.kd_cost` for measured cost; the same
`fdk.distill` runs as one rank of a DDP job under torchrun.
"""

from fdk import notebook, stats
from fdk.bank import SyntheticBank
from fdk.config import override
from fdk.cost import kd_cost, synthesis_cost
from fdk.data import ImageTensors, SegTensors, find_split, load_split
from fdk.distill import DistillResult, distill
from fdk.evaluate import agreement, batch_metrics, evaluate, evaluate_task, heldout_agreement, teacher_predictions
from fdk.imagenet_data import load_imagenet_val
from fdk.inputs import InputSpec, dataset_spec
from fdk.jobs import resume
from fdk.methods import METHODS, SynthConfig, make_synthesizer
from fdk.models import EMBEDDED_SEG_TEACHER, EMBEDDED_TEACHER, MODELS, create_model, load_model
from fdk.presets import PRESETS, DistillConfig, get_preset
from fdk.reference import distill_on_images, untrained_score
from fdk.run import read_run
from fdk.scenes import make_scenes
from fdk.segdata import find_task_split, load_nyuv2, load_task_split
from fdk.segmetrics import evaluate_segmentation
from fdk.stop import Stopped
from fdk.train import RECIPES, TeacherConfig, train_teacher
from fdk.utils import VERSION as __version__
from fdk.utils import FdkError, resolve_device, seed_everything

__all__ = [
    "__version__",
    "notebook",
    "stats",
    "EMBEDDED_SEG_TEACHER",
    "EMBEDDED_TEACHER",
    "METHODS",
    "MODELS",
    "PRESETS",
    "RECIPES",
    "DistillConfig",
    "DistillResult",
    "FdkError",
    "ImageTensors",
    "SegTensors",
    "Stopped",
    "InputSpec",
    "SynthConfig",
    "SyntheticBank",
    "TeacherConfig",
    "agreement",
    "batch_metrics",
    "create_model",
    "dataset_spec",
    "distill",
    "distill_on_images",
    "evaluate",
    "evaluate_segmentation",
    "evaluate_task",
    "find_split",
    "find_task_split",
    "get_preset",
    "heldout_agreement",
    "kd_cost",
    "load_imagenet_val",
    "synthesis_cost",
    "load_model",
    "load_nyuv2",
    "load_split",
    "load_task_split",
    "make_scenes",
    "make_synthesizer",
    "override",
    "read_run",
    "resolve_device",
    "resume",
    "seed_everything",
    "teacher_predictions",
    "train_teacher",
    "untrained_score",
]
