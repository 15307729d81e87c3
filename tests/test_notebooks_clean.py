"""Committed notebooks carry no outputs (nbstripout) and follow the papermill/nbval conventions."""

import json

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_walkthroughs_exist_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names[:2] == ["01_bn_inversion.ipynb", "02_meta_initialization.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code), "run `make strip`"
    assert "widgets" not in nb["metadata"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters` (papermill)"
    source = "".join(tagged[0]["source"])
    assert 'SMOKE = os.environ.get("FDK_SMOKE", "0") == "1"' in source
    assert sum("assert " in "".join(c["source"]) for c in code) >= 3, "cells assert what they show (nbval lax)"
