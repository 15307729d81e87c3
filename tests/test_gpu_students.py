"""Students that the GPU runbook brought back (benchmarks/gpu/results/<job>/*.student.safetensors), measured
again on the real CIFAR-10 test split.

Every such student must have the top-1 its run recorded, and each comparison method of runbook J8 must
have taught its student something: at least 4 points over an untrained student of the same architecture.
That is issue 13's "each method improves a student" for ZSKT and DFAD, which do not learn at any CPU smoke
size (docs/method.md §15): until J8 has run, these tests skip and say so.
"""

import pytest

from fdk.checkpoint import read_metadata
from fdk.data import find_split
from fdk.evaluate import evaluate
from fdk.inputs import dataset_spec
from fdk.models import create_model, load_model
from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "gpu" / "results"
J8_METHODS = ("dafl", "zskt", "dfq", "dfad", "cmi5")
STUDENTS = sorted(RESULTS.glob("*/*.student.safetensors"))
AMP_TOLERANCE = 0.5  # points: the run evaluated on a GPU (bf16 where amp=bf16), this on the CPU in fp32


def top1(model, cifar10_root) -> float:
    spec = dataset_spec("cifar10")
    return evaluate(model, find_split(cifar10_root.parent, "cifar10", "test"), spec.mean, spec.std)["top1"]


@pytest.mark.data
@pytest.mark.parametrize("path", STUDENTS or [None], ids=lambda p: p and f"{p.parent.name}/{p.name}")
def test_gpu_student_has_its_recorded_accuracy(cifar10_root, path):
    if path is None:
        pytest.skip("no student has come back from the GPU runbook yet (benchmarks/gpu/STATUS.md)")
    recorded = read_metadata(path).get("test_top1")
    if recorded is None:
        pytest.skip(f"{path.name} records no test top-1 (its run stopped on an epoch without evaluation)")
    assert top1(load_model(path), cifar10_root) == pytest.approx(recorded, abs=AMP_TOLERANCE)


@pytest.mark.data
@pytest.mark.parametrize("method", J8_METHODS)
def test_j8_method_improved_its_student(cifar10_root, method):
    found = [p for p in STUDENTS if p.parent.name.split("-")[:2] == ["j8", method]]  # j8-zskt, j8-zskt-bn, ...
    if not found:
        pytest.skip(f"runbook J8 has not brought back a {method} student yet (benchmarks/gpu/README.md, J8)")
    for path in found:
        arch = read_metadata(path)["arch"]
        untrained = top1(create_model(arch, 10), cifar10_root)
        assert top1(load_model(path), cifar10_root) >= untrained + 4, path
