import pytest

from fdk.checkpoint import read_metadata
from fdk.data import load_split
from fdk.evaluate import evaluate
from fdk.inputs import dataset_spec
from fdk.models import EMBEDDED_TEACHER, load_model

RECORDED_TOP1 = 91.67  # weights/README.md


def test_embedded_teacher_metadata():
    meta = read_metadata(EMBEDDED_TEACHER)
    assert meta["arch"] == "resnet20" and meta["num_classes"] == 10 and meta["dataset"] == "cifar10"
    assert meta["test_top1"] == RECORDED_TOP1
    assert EMBEDDED_TEACHER.stat().st_size < 20 * 2**20


@pytest.mark.data
def test_embedded_teacher_accuracy_on_real_cifar10(cifar10_root):
    info = dataset_spec("cifar10")
    metrics = evaluate(load_model(EMBEDDED_TEACHER), load_split(cifar10_root, "cifar10", "test"), info.mean, info.std)
    assert metrics["top1"] >= RECORDED_TOP1 - 0.5
