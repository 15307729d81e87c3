"""Committed notebooks carry no outputs (nbstripout) and follow the papermill/nbval conventions."""

import json

import papermill
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_walkthroughs_exist_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names[:4] == ["01_bn_inversion.ipynb", "02_meta_initialization.ipynb", "03_segmentation.ipynb",
                         "04_imagenet_scaling.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code), "run `make strip`"
    assert "widgets" not in nb["metadata"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters` (papermill)"
    # papermill must parse every parameter (it skips lines it cannot read, e.g. a call or "=" in a comment)
    parameters = papermill.inspect_notebook(str(path))
    assert {"SMOKE", "TEACHER", "DATA", "DEVICE", "OUT", "SEED"} <= set(parameters)
    assert parameters["SMOKE"]["default"] == "None", "SMOKE defaults to None: follow FDK_SMOKE"
    assert sum("assert " in "".join(c["source"]) for c in code) >= 3, "cells assert what they show (nbval lax)"


def test_smoke_follows_the_environment_unless_a_parameter_says(monkeypatch, tmp_path):
    """nbval cannot pass parameters: SMOKE=None reads FDK_SMOKE; papermill's -p SMOKE wins over it."""
    from fdk.notebook import resolve_smoke, setup

    monkeypatch.setenv("FDK_SMOKE", "1")
    assert resolve_smoke(None) is True and resolve_smoke(False) is False
    monkeypatch.setenv("FDK_SMOKE", "0")
    assert resolve_smoke(None) is False and resolve_smoke(True) is True
    monkeypatch.delenv("FDK_SMOKE")
    assert resolve_smoke(None) is False
    nb = setup("01_test", smoke=None, data="", device="cpu", out=str(tmp_path))
    assert nb.smoke is False and nb.test is None and nb.out_dir == tmp_path / "01_test"
    assert nb.inputs.name == "cifar10" and not nb.teacher.training


def test_setup_of_a_segmentation_notebook_finds_the_scenes(tmp_path, tiny_cifar10, monkeypatch):
    """Notebook 03's setup: the embedded dense teacher, and the CIFAR-scenes test split built from the
    CIFAR-10 found under DATA (every 5th scene in smoke mode)."""
    import fdk.scenes
    from fdk.models import EMBEDDED_SEG_TEACHER
    from fdk.notebook import setup

    monkeypatch.setattr(fdk.scenes, "SCENE_COUNTS", {"train": 8, "test": 10})
    nb = setup("03_test", True, str(EMBEDDED_SEG_TEACHER), str(tiny_cifar10.parent), "cpu", str(tmp_path))
    assert nb.inputs.dense and nb.data == str(tiny_cifar10.parent)
    assert nb.test.masks.shape == (2, 64, 64)  # 10 scenes, every 5th
