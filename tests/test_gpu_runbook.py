"""The GPU runbook (benchmarks/gpu/runbook.py) on a CPU, in --tiny mode: staging and unpacking bit-exactly,
each job across several calls as on a warm GPU machine, and outputs that fit what comes back from it."""

import importlib.util
import json
import re
import shutil

import pytest
import torch

import fdk
from fdk.checkpoint import read_metadata
from fdk.evaluate import evaluate
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("runbook", REPO / "benchmarks" / "gpu" / "runbook.py")
runbook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runbook)


def check_out(out):
    """What comes back from a GPU call: at most 8 plain files, each under 16 MB, with plain names."""
    files = list(out.iterdir())
    assert 0 < len(files) <= 8, [f.name for f in files]
    for f in files:
        assert f.is_file() and f.stat().st_size < 16 * 2**20 and re.fullmatch(r"[A-Za-z0-9._-]+", f.name), f


@pytest.fixture
def staged(tiny_cifar10, tmp_path):
    """tiny_cifar10 (40 train, 20 test images) packed in chunks of 8: train-a, train-b and test groups."""
    full = tmp_path / "staged"
    sizes = runbook.pack(tiny_cifar10, full, chunk=8)
    assert set(sizes) == {"train-a", "train-b", "test"}
    return full


def carry(staged, work, *groups):
    """What a call's `carry` does: the named groups arrive, what arrived before stays."""
    for group in groups:
        shutil.copytree(staged / "stage" / group, work / "stage" / group)


def test_staging_round_trip_is_bit_exact(staged, tiny_cifar10, tmp_path):
    work = tmp_path / "work"
    carry(staged, work, "test")
    assert not runbook.unpack(work, "train")  # nothing of train has arrived
    carry(staged, work, "train-a")
    assert not runbook.unpack(work, "train")  # half of it
    carry(staged, work, "train-b")
    for split in ("train", "test"):
        assert runbook.unpack(work, split)
        original = fdk.load_split(tiny_cifar10, "cifar10", split)
        unpacked = fdk.load_split(work / "cifar10", "cifar10", split)
        assert torch.equal(original.images, unpacked.images) and torch.equal(original.labels, unpacked.labels)


def test_pack_groups_fit_a_call_at_full_size():
    """At 5000 images per mosaic the README's groups are train chunks 0-5, 6-9 and the two test chunks."""
    groups = {i: ("train-a" if i < 0.6 * 10 else "train-b") for i in range(10)}
    assert [i for i, g in groups.items() if g == "train-a"] == [0, 1, 2, 3, 4, 5]


def test_teacher_job_stages_trains_across_calls_and_returns_weights_and_stats(staged, tmp_path):
    work = tmp_path / "work"
    args = ["teacher", "--tiny", "--arch", "resnet8", "--recipe", "cpu", "--device", "cpu", "--work", str(work)]
    carry(staged, work, "train-a")
    first = runbook.main([*args, "--out", str(tmp_path / "out1")])
    assert first["status"] == "staging"
    carry(staged, work, "train-b", "test")
    second = runbook.main([*args, "--out", str(tmp_path / "out2"), "--minutes", "0"])  # time is up after epoch 0
    assert second["status"].startswith("running") and [r["epoch"] for r in second["epochs"]] == [0]
    third = runbook.main([*args, "--out", str(tmp_path / "out3")])
    assert third["status"] == "done" and [r["epoch"] for r in third["epochs"]] == [0, 1, 2]
    assert third["job_seconds"] > third["call_seconds"]
    for out in ("out1", "out2", "out3"):
        check_out(tmp_path / out)
    weights = tmp_path / "out3" / "cifar10_resnet8.safetensors"
    assert fdk.load_model(weights).arch == "resnet8"
    stats, meta = fdk.stats.load_statistics(tmp_path / "out3" / "cifar10_resnet8_features.safetensors", weights)
    assert meta["images"] == 40 and stats["class_means"].shape[0] == 10
    assert json.loads((tmp_path / "out3" / "result.json").read_text())["machine"]["device"] == "cpu"


def test_teacher_fit_trains_the_epochs_that_fit_one_call(staged, tmp_path):
    """--fit (a short GPU window): two timed epochs size the schedule; one call trains, measures, returns."""
    work = tmp_path / "work"
    carry(staged, work, "train-a", "train-b", "test")
    args = ["teacher", "--tiny", "--fit", "--arch", "resnet8", "--recipe", "cpu", "--device", "cpu", "--work", str(work)]  # fmt: skip
    result = runbook.main([*args, "--out", str(tmp_path / "out")])
    assert result["status"] == "done" and result["fit"]["epochs"] == 3  # time for all of the tiny recipe's 3
    assert [r["epoch"] for r in result["epochs"]] == [0, 1, 2] and result["run"]["config"]["epochs"] == 3
    assert not (work / "runs" / "probe-resnet8").exists()
    check_out(tmp_path / "out")
    shutil.rmtree(work / "runs" / "teacher-resnet8")
    short = runbook.main([*args, "--out", str(tmp_path / "out2"), "--minutes", "1"])
    assert short["fit"]["epochs"] == 1  # 60 s are kept for the statistics: one epoch is the floor


def test_distill_job_resumes_across_calls(staged, tmp_path):
    work = tmp_path / "work"
    carry(staged, work, "test")
    args = ["distill", "--tiny", "--device", "cpu", "--work", str(work)]
    first = runbook.main([*args, "--out", str(tmp_path / "out1"), "--minutes", "0"])
    assert first["status"].startswith("running") and len(first["epochs"]) == 1
    check_out(tmp_path / "out1")
    (partial,) = first["files"]  # the student so far comes back, with the test top-1 the run measured
    student = fdk.load_model(tmp_path / "out1" / partial)
    assert read_metadata(tmp_path / "out1" / partial)["epoch"] == 0
    spec = fdk.dataset_spec("cifar10")
    measured = evaluate(student, fdk.load_split(work / "cifar10", "cifar10", "test"), spec.mean, spec.std)["top1"]
    assert measured == pytest.approx(first["epochs"][-1]["test_top1"], abs=1e-6)
    second = runbook.main([*args, "--out", str(tmp_path / "out2")])
    assert second["status"] == "done" and [r["epoch"] for r in second["epochs"]] == [0, 1, 2]
    summary = second["summary"]
    assert summary["final_top1"] is not None and summary["synth_hours"] > 0 and summary["images_synthesized"] == 24
    assert second["job_seconds"] > second["call_seconds"]
    check_out(tmp_path / "out2")


def test_large_artifacts_come_back_in_parts(tmp_path):
    job = runbook.Job("t", tmp_path / "out", 1, True)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (17 * 2**12))  # 17 MiB
    parts = job.keep(big)
    assert parts == ["big.bin.part00", "big.bin.part01"]
    assert b"".join((tmp_path / "out" / p).read_bytes() for p in parts) == big.read_bytes()


@pytest.mark.slow
def test_engine_job_runs_every_benchmark(tmp_path):
    result = runbook.main(["engine", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result["status"] == "done"
    engine = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert {"synthesis", "kd", "paper_schedule_estimate", "end_to_end", "kd_variants"} <= set(engine)
    measured = [row for row in engine["kd_variants"].values() if "images_per_second" in row]
    assert len(measured) >= 4  # all but CUDA graphs, which need a GPU
    assert "phases_seconds" in json.loads((tmp_path / "out" / "profile.json").read_text())
    check_out(tmp_path / "out")


def test_segmentation_job_measures_synthesis_and_kd(tmp_path):
    result = runbook.main(["segmentation", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result["status"] == "done"
    measured = json.loads((tmp_path / "out" / "segmentation.json").read_text())["pairs"]["cifar_scenes"]
    assert measured["fast2_seconds_per_image"] > 0 and measured["kd_images_per_second"] > 0
    check_out(tmp_path / "out")


def test_imagenet_job_measures_the_grid_and_the_modes(tmp_path):
    result = runbook.main(["imagenet", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result["status"] == "done"
    measured = json.loads((tmp_path / "out" / "imagenet.json").read_text())
    assert measured["grid"][0]["synth_images_per_second"] > 0 and measured["grid"][0]["kd_images_per_second"] > 0
    assert [row["mode"] for row in measured["modes"]] == ["fp32", "bf16", "bf16+channels_last"]
    check_out(tmp_path / "out")


def test_ddp_job_runs_fdk_distill_under_torchrun(tmp_path):
    """On the CPU the one-process group is gloo; on the GPU the same job checks NCCL."""
    result = runbook.main(["ddp", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work")])  # fmt: skip
    assert result["status"] == "done"
    assert (result["backend"], result["world_size"]) == ("gloo", 1)
    assert result["summary"]["images_synthesized"] == 4
    check_out(tmp_path / "out")


def test_methods_job_measures_the_comparison_methods(tmp_path):
    result = runbook.main(["methods", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result["status"] == "done"
    rows = json.loads((tmp_path / "out" / "methods.json").read_text())["rows"]
    assert set(rows) == {"fast2", "dfad", "cmi5"} and rows["dfad"]["kd_images_per_second"] > 0
    check_out(tmp_path / "out")
