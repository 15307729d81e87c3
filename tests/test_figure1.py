"""benchmarks/figure1.py end to end at tiny sizes: every method runs, the results file and plot appear,
finished runs are read back rather than rerun, and the time-to-accuracy table follows its definition."""

import importlib.util
import json

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("figure1", REPO / "benchmarks" / "figure1.py")
figure1 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figure1)


def test_time_to_reach_is_the_first_evaluation_at_the_level():
    curve = [(1.0, 12.0), (2.0, 25.0), (4.0, 24.0), (8.0, 31.0)]
    assert figure1.time_to_reach(curve, 25.0) == 2.0 and figure1.time_to_reach(curve, 30.0) == 8.0
    assert figure1.time_to_reach(curve, 40.0) is None


def test_figure1_tiny_runs_every_method(cifar10_root, tmp_path):
    args = ["--data", str(cifar10_root.parent), "--out", str(tmp_path / "fig"), "--runs", str(tmp_path / "runs"),
            "--tiny"]  # fmt: skip
    results = figure1.main(args)
    assert set(results["runs"]) == {"fast2", "fast5", "fast10", "sequential5", "no_reuse5", "deepinv50",
                                    "deepinv100", "deepinv200", "cmi50", "dafl", "zskt", "dfq", "dfad"}  # fmt: skip
    assert results["runs"]["dfq"]["method"] == "dfq" and results["runs"]["cmi50"]["synth_steps"] == 2
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "fig.json").read_text())
    assert saved["runs"]["fast5"]["curve"] and saved["time_to_accuracy"]["levels"]
    for level, by_method in saved["time_to_accuracy"]["levels"].items():
        for name, row in by_method.items():
            assert row["synth_seconds"] == figure1.time_to_reach(saved["runs"][name]["curve"], float(level))
    again = figure1.main(args)  # finished runs are read back, not run again
    assert again["runs"]["fast5"]["synth_seconds"] == results["runs"]["fast5"]["synth_seconds"]
    assert "| fast5 | 5 |" in figure1.markdown(again)
