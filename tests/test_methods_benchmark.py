"""benchmarks/methods.py at tiny sizes: every comparison method is measured on one engine, and the speed-up
column is DeepInv-2k's paper-schedule synthesis hours over each method's (docs/method.md §6)."""

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("methods_benchmark", REPO / "benchmarks" / "methods.py")
methods = importlib.util.module_from_spec(spec)
spec.loader.exec_module(methods)


def test_every_method_is_measured_and_the_speedup_follows_its_definition(tmp_path):
    result = methods.main(["--device", "cpu", "--batch", "4", "--calls", "1", "--scaled-steps", "1", "--kd-steps", "1",
                           "--out", str(tmp_path / "m.json")])  # fmt: skip
    rows = result["rows"]
    assert set(rows) == set(methods.METHODS)
    deep = rows["deepinv2k"]
    for name, row in rows.items():
        assert row["seconds_per_call"] > 0 and row["kd_images_per_second"] > 0, name
        assert row["speedup_vs_deepinv2k"] == pytest.approx(deep["paper_synthesis_hours"] / row["paper_synthesis_hours"])
    assert rows["dafl"]["paper_calls"] == 200 * 80 and rows["dfq"]["paper_calls"] == 200 * 40  # 400 KD steps / 5 or 10
    assert rows["fast5"]["paper_calls"] == 220
    assert (tmp_path / "m.json").exists()
