"""Run folders are safe (docs/method.md §8): fdk touches only the files it names, never replaces a run
unless asked, lets one process at a time into a folder, and keeps a folder readable after a torn write.

The slow fault-injection suite (kill -9, signals, full disks, torchrun) is tests/test_faults.py."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from fdk.cli import main
from fdk.distill import distill
from fdk.models import EMBEDDED_TEACHER, create_model, load_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import RunFolder, read_run
from fdk.train import RECIPES, train_teacher
from fdk.utils import FdkError

TINY = dataclasses.replace(PRESETS["smoke/fast_meta"], teacher="resnet8", student="resnet8", epochs=3, warmup=1,
                           ep_steps=2, kd_steps=2, synth_batch_size=8, kd_batch_size=8, synth_steps=1, nz=8, ngf=4,
                           cosine_t_max=2, reset_l0_call=2)  # fmt: skip
# Names a user may well keep beside a run: like fdk's, but not fdk's (the old code deleted *rank*.* files).
DECOYS = ["frank.txt", "ranking.csv", "rank0.notes", "rank1.pt", "checkpoint.pt.bak", "notes.md", "student.pt",
          ".checkpoint.pt.bak.tmp", ".notes.abcd1234.tmp", "metrics.jsonl.old"]  # fmt: skip


def tiny_teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(create_model("resnet8", 10), mean_std=0.3)


def run(out, **kwargs):
    return distill(TINY, tiny_teacher(), out_dir=out, device="cpu", progress=False, **kwargs)


def put_decoys(folder) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(DECOYS):
        (folder / name).write_bytes(f"the user's own {name} #{i}\n".encode() * 50)
    return {name: (folder / name).read_bytes() for name in DECOYS}


def snapshot(folder) -> dict:
    """Every file in the folder and its SHA-256 (the lock file aside: holding it is not changing the run)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != "run.lock"}  # fmt: skip


def test_decoys_survive_start_stop_resume_finish_and_overwrite(tmp_path):
    decoys = put_decoys(tmp_path / "run")
    run(tmp_path / "run", on_epoch=lambda r: r["epoch"] >= 0)  # start, stop after epoch 0
    assert {n: (tmp_path / "run" / n).read_bytes() for n in DECOYS} == decoys
    run(tmp_path / "run", resume=True)  # resume and finish
    assert (tmp_path / "run" / "student.safetensors").exists()
    run(tmp_path / "run", overwrite=True)  # replace the finished run
    assert {n: (tmp_path / "run" / n).read_bytes() for n in DECOYS} == decoys
    assert len(read_run(tmp_path / "run")["epochs"]) == TINY.epochs  # a fresh run, not the old lines appended
    own = {p.name for p in RunFolder(tmp_path / "run").owned()} | {"run.lock"}
    assert {p.name for p in (tmp_path / "run").iterdir()} <= own | set(DECOYS)


@pytest.mark.parametrize("finished", [True, False])
def test_a_second_start_is_refused_and_changes_nothing(tmp_path, finished):
    out = tmp_path / "run"
    run(out, on_epoch=None if finished else (lambda r: r["epoch"] >= 0))
    before = snapshot(out)
    with pytest.raises(FdkError) as error:
        run(out)
    text = str(error.value)
    if finished:
        assert "holds a finished distill run (3 of 3 epochs" in text
    else:
        assert "holds an unfinished distill run (1 of 3 epochs done)" in text
    assert f"fdk distill --resume {out}" in text and "--overwrite" in text and "\n" not in text
    assert snapshot(out) == before


def test_cli_refuses_a_second_start_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--preset", "smoke/fast_meta", "--teacher", str(EMBEDDED_TEACHER), "--data", "", "--out",
            str(out), "--no-progress", *[a for kv in ("epochs=2", "warmup=1", "ep_steps=2", "kd_steps=2",
            "synth_batch_size=8", "kd_batch_size=8", "synth_steps=1", "student=resnet8", "ngf=8", "nz=16")
            for a in ("--set", kv)]]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a finished distill run (2 of 2 epochs)" in err[0] and "--overwrite" in err[0]
    assert snapshot(out) == before
    assert main([*argv, "--set", "seed=1", "--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 1
    assert main(["distill", "--resume", str(out), "--overwrite"]) == 2  # resume takes nothing else
    assert "drop --overwrite" in capsys.readouterr().err


def test_train_teacher_refuses_a_second_start(tiny_cifar10, tmp_path):
    cfg = dataclasses.replace(RECIPES["cpu"], arch="resnet8", epochs=1, batch_size=8)
    train_teacher(cfg, tiny_cifar10, tmp_path / "t", "cpu", progress=False)
    before = snapshot(tmp_path / "t")
    with pytest.raises(FdkError, match=r"holds a finished train-teacher run \(1 of 1 epochs, test_top1"):
        train_teacher(cfg, tiny_cifar10, tmp_path / "t", "cpu", progress=False)
    assert snapshot(tmp_path / "t") == before
    train_teacher(cfg, tiny_cifar10, tmp_path / "t", "cpu", progress=False, overwrite=True)
    with pytest.raises(FdkError, match="batch_size=100 is more than the 40 training images"):
        train_teacher(dataclasses.replace(cfg, batch_size=100), tiny_cifar10, tmp_path / "u", "cpu", progress=False)
    assert not (tmp_path / "u").exists()


def test_files_with_fdk_names_that_no_run_wrote_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"the user's own checkpoint")
    for overwrite in (False, True):  # overwrite replaces an fdk run; it never makes someone else's files ours
        with pytest.raises(FdkError, match=r"holds checkpoint.pt but no fdk run \(no run.json\)"):
            run(out, overwrite=overwrite)
    assert (out / "checkpoint.pt").read_bytes() == b"the user's own checkpoint"
    (out / "checkpoint.pt").unlink()
    (out / "run.json").write_text('{"experiment": "mine"}')
    with pytest.raises(FdkError, match="run.json was not written by fdk"):
        run(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_one_process_per_folder(tmp_path):
    """A folder another process holds is refused (new start, overwrite, resume) and left as it was; the lock
    goes with its holder however that ends, kill -9 included."""
    out = tmp_path / "run"
    run(out, on_epoch=lambda r: r["epoch"] >= 0)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fdk.run import RunFolder; "
                               "RunFolder(sys.argv[1]).lock(); print('locked', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        for kwargs in ({"resume": True}, {"overwrite": True}, {}):
            with pytest.raises(FdkError, match=rf"{out} is in use by another fdk process \(pid {holder.pid} on "):
                run(out, **kwargs)
        assert snapshot(out) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert len(run(out, resume=True).state.bank) == TINY.epochs * TINY.synth_batch_size


def test_a_lock_held_in_this_process_refuses_too(tmp_path):
    """Two runs on one folder within one process (a notebook thread, an on_epoch callback) exclude each other."""
    folder = RunFolder(tmp_path / "run")
    folder.lock()
    try:
        with pytest.raises(FdkError, match="in use by another fdk process"):
            run(tmp_path / "run")
    finally:
        folder.unlock()
    run(tmp_path / "run")


def test_torn_metrics_line_and_stale_temporaries(tmp_path):
    """A kill while appending to metrics.jsonl leaves a torn last line; one during an atomic write leaves a
    temporary file. Resume drops the line and removes fdk's temporaries by their exact pattern, nothing else."""
    out = tmp_path / "run"
    decoys = put_decoys(out)
    run(out, on_epoch=lambda r: r["epoch"] >= 0)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "kd_lo')
    (out / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"half a checkpoint")
    (out / ".bank.u8.zz_9yx81.tmp").write_bytes(b"half")
    assert [r["epoch"] for r in read_run(out)["epochs"]] == [0]
    run(out, resume=True)
    assert [r["epoch"] for r in read_run(out)["epochs"]] == [0, 1, 2]
    assert not (out / ".checkpoint.pt.a1b2c3d4.tmp").exists() and not (out / ".bank.u8.zz_9yx81.tmp").exists()
    assert {n: (out / n).read_bytes() for n in DECOYS} == decoys


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(FdkError, match="resume and overwrite exclude each other"):
        run(tmp_path, resume=True, overwrite=True)


def test_a_folder_given_as_weights_file_says_so():
    with pytest.raises(FdkError, match=r"weights file .*weights is a folder, not a file; pass a .safetensors or "
                       r".pth file, e.g. .*weights/cifar10_resnet20.safetensors"):  # fmt: skip
        load_model(EMBEDDED_TEACHER.parent)


def test_demo_replaces_its_own_earlier_run_but_no_other(tmp_path, monkeypatch):
    import fdk.demo

    monkeypatch.delenv("FDK_DATA", raising=False)
    monkeypatch.setattr(fdk.demo, "get_preset", lambda name: dataclasses.replace(TINY, teacher="resnet20"))
    fdk.demo.run_demo(tmp_path / "demo", progress=False)
    fdk.demo.run_demo(tmp_path / "demo", progress=False)  # `fdk demo` twice: the demo is scratch
    assert json.loads((tmp_path / "demo" / "report.json").read_text())["images_synthesized"] == TINY.epochs * TINY.synth_batch_size
    run(tmp_path / "mine")
    with pytest.raises(FdkError, match="holds a finished distill run"):
        fdk.demo.run_demo(tmp_path / "mine", progress=False)
    fdk.demo.run_demo(tmp_path / "mine", progress=False, overwrite=True)
