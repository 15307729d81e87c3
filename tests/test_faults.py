"""Fault injection (docs/method.md §8): a run that is stopped by a signal, killed, or meets a full disk
keeps its last good state, and resuming it gives exactly the student and bank of an uninterrupted run.

In-process cases here inject the fault at a chosen point (a signal raised inside the n-th step, a write that
fails at a chosen byte); the process-level ones (kill -9, signals from outside, two processes at once,
torchrun) run benchmarks/faults.py's trials, whose full set writes benchmarks/results/faults-cpu.json."""

import dataclasses
import errno
import importlib
import importlib.util
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import fdk.checkpoint
import fdk.stop
import fdk.train
from fdk.distill import distill
from fdk.methods.base import Synthesizer
from fdk.models import create_model, load_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.run import read_run
from fdk.stop import Stopped
from fdk.train import RECIPES, train_teacher
from fdk.utils import FdkError

ROOT = Path(__file__).resolve().parents[1]
TINY = dataclasses.replace(PRESETS["smoke/fast_meta"], teacher="resnet8", student="resnet8", epochs=3, warmup=1,
                           ep_steps=4, kd_steps=2, synth_batch_size=8, kd_batch_size=8, synth_steps=1, nz=8, ngf=4,
                           cosine_t_max=2, reset_l0_call=3)  # fmt: skip  2 calls of 2 KD steps per epoch
METHODS = {
    "fast_meta": TINY,
    "deepinversion": dataclasses.replace(TINY, method="deepinversion", synth_steps=2),
    "dfad": dataclasses.replace(PRESETS["smoke/dfad"], teacher="resnet8", student="resnet8", epochs=3, ep_steps=4,
                                kd_steps=2, synth_batch_size=8, kd_batch_size=8, nz=8, ngf=8, cosine_t_max=2),
    "cmi": dataclasses.replace(PRESETS["smoke/cmi"], teacher="resnet8", student="resnet8", epochs=3, warmup=1,
                               ep_steps=4, kd_steps=2, synth_batch_size=8, kd_batch_size=8, synth_steps=2, nz=8,
                               ngf=4, cosine_t_max=2, cmi_memory=64, cmi_negatives=16, cmi_head_dim=16),
}  # fmt: skip
SPILLED = dataclasses.replace(TINY, bank_device_images=12, bank_spill="disk")
DISTILL = importlib.import_module("fdk.distill")  # the module (fdk.distill is the function: fdk/__init__.py)


def tiny_teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(create_model("resnet8", 10), mean_std=0.3)


def run(cfg, out, **kwargs):
    return distill(cfg, tiny_teacher(), out_dir=out, device="cpu", progress=False, **kwargs)


def outcome(out) -> dict:
    """What must not differ from an uninterrupted run: the student, the bank file, the epochs logged."""
    student = load_model(out / "student.safetensors").state_dict()
    epochs = [r["epoch"] for r in read_run(out)["epochs"]]
    return {"student": student, "bank": (out / "bank.u8").read_bytes() if (out / "bank.u8").exists() else b"",
            "epochs": epochs}  # fmt: skip


def assert_same(a: dict, b: dict):
    assert a["epochs"] == b["epochs"] and a["bank"] == b["bank"], (a["epochs"], b["epochs"])
    assert a["student"].keys() == b["student"].keys()
    for k in a["student"]:
        assert torch.equal(a["student"][k], b["student"][k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run per config, made when first asked for."""
    made = {}

    def get(name, cfg):
        if name not in made:
            out = tmp_path_factory.mktemp(f"full-{name}")
            run(cfg, out, overwrite=True)
            made[name] = {**outcome(out), "sizes": {p.name: p.stat().st_size for p in out.iterdir()}}
        return made[name]

    return get


def signal_at(monkeypatch, target: str, n: int, signals=1):
    """Raise SIGTERM `signals` times inside the n-th call of `target` (kd_step or synthesize)."""
    calls = [0]

    def hurt(original):
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            calls[0] += 1
            if calls[0] == n:
                for _ in range(signals):
                    signal.raise_signal(signal.SIGTERM)
            return result

        return wrapped

    if target == "kd_step":
        monkeypatch.setattr(DISTILL, "kd_step", hurt(DISTILL.kd_step))
    else:
        monkeypatch.setattr(Synthesizer, "synthesize", hurt(Synthesizer.synthesize))


# where a signal arrives: (target, n-th call, the stop message's place). 2 calls x 2 KD steps per epoch, epoch 0
# synthesises only.
POINTS = [
    ("synthesize", 1, "in epoch 0 after synthesis call 1 of 2"),
    ("synthesize", 2, "in epoch 0 after synthesis call 2 of 2"),
    ("synthesize", 4, "in epoch 1 after synthesis call 2 of 2"),
    ("kd_step", 1, "in epoch 1 after KD step 1 of 2"),
    ("kd_step", 4, "in epoch 1 after KD step 2 of 2"),  # the epoch's last step: the epoch ends on resume
    ("kd_step", 8, "in epoch 2 after KD step 2 of 2"),  # the run's last step
]


@pytest.mark.slow
@pytest.mark.parametrize("method,target,n,where", [("fast_meta", *p) for p in POINTS] + [
    ("deepinversion", "kd_step", 3, "in epoch 1 after KD step 1 of 2"),
    ("dfad", "kd_step", 7, "in epoch 1 after KD step 1 of 2"),  # no warm-up: KD from epoch 0
    ("cmi", "synthesize", 3, "in epoch 1 after synthesis call 1 of 2")])  # fmt: skip
def test_a_signal_stops_after_the_current_step_and_resume_is_exact(tmp_path, monkeypatch, uninterrupted, method,
                                                                   target, n, where):  # fmt: skip
    cfg, out = METHODS[method], tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_at(patch, target, n)
        with pytest.raises(Stopped) as stopped:
            run(cfg, out)
    assert stopped.value.signum == signal.SIGTERM
    assert str(stopped.value) == (f"stopped by SIGTERM {where}; the checkpoint holds that point: continue with "
                                  f"fdk distill --resume {out}")  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with the run
    if target == "kd_step":  # the KD seconds of the unfinished phase are counted
        assert fdk.checkpoint.load_checkpoint(out / "checkpoint.pt")["seconds"]["kd"] > 0
    run(cfg, out, resume=True)
    assert_same(outcome(out), uninterrupted(method, cfg))


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_the_last_checkpoint_stands(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(fdk.stop, "REPEAT_SECONDS", -1.0)  # any repeat counts as a second request
        signal_at(patch, "kd_step", 3, signals=2)
        with pytest.raises(Stopped, match=r"stopped at once by a second SIGTERM; .* --resume"):
            run(TINY, out)
    checkpoint = fdk.checkpoint.load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 0 and checkpoint["progress"] is None  # epoch 0's, untouched by the stop
    run(TINY, out, resume=True)
    assert_same(outcome(out), uninterrupted("fast_meta", TINY))


def test_a_repeated_signal_within_the_window_counts_once(tmp_path, monkeypatch):
    """Ctrl-C under torchrun reaches a rank twice (from the terminal, and forwarded by torchrun)."""
    with monkeypatch.context() as patch:
        signal_at(patch, "kd_step", 1, signals=2)
        with pytest.raises(Stopped, match="the checkpoint holds that point"):
            run(TINY, tmp_path / "run")


@pytest.mark.slow
def test_a_signal_stops_teacher_training_after_the_current_step(tiny_cifar10, tmp_path, monkeypatch):
    """Teacher training resumes mid-epoch too: the epoch's batch order and augmentation are replayed up to
    the stop (no forward pass), then the random streams continue from where the stop left them."""
    cfg = dataclasses.replace(RECIPES["cpu"], arch="resnet8", epochs=2, batch_size=8)  # 5 steps per epoch
    train_teacher(cfg, tiny_cifar10, tmp_path / "full", "cpu", progress=False)
    calls, rate = [0], fdk.train.learning_rate

    def learning_rate(*args):
        calls[0] += 1
        if calls[0] == 8:  # epoch 1, step 3
            signal.raise_signal(signal.SIGINT)
        return rate(*args)

    with monkeypatch.context() as patch:
        patch.setattr(fdk.train, "learning_rate", learning_rate)
        with pytest.raises(Stopped, match=r"stopped by SIGINT in epoch 1 after step 3 of 5; .*train-teacher --resume"):
            train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", progress=False)
    train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", resume=True, progress=False)
    a = load_model(tmp_path / "full" / "model.safetensors").state_dict()
    b = load_model(tmp_path / "cut" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_run(tmp_path / "full")["epochs"][1]["train_loss"] == read_run(tmp_path / "cut")["epochs"][1]["train_loss"]


# --- full disks -------------------------------------------------------------------------------------------------


def fail_writes(monkeypatch, name: str, at: int):
    """The disk is full once `at` bytes of files called `name` (or their atomic-write temporaries) are written."""
    write, counted = fdk.checkpoint._write, [0]

    def full(f, data):
        base = os.path.basename(str(f.name))
        if base == name or base.startswith(f".{name}."):
            data = memoryview(data).cast("B")
            if counted[0] + len(data) > at:
                write(f, data[: max(0, at - counted[0])])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            counted[0] += len(data)
        write(f, data)

    monkeypatch.setattr(fdk.checkpoint, "_write", full)


# (file, when the disk is full: once the bytes written to it reach this fraction of its size at the end of an
# uninterrupted run; checkpoint.pt 2.5: half-way through the third checkpoint)
FULL_AT = [("checkpoint.pt", 2.5), ("bank.u8", 0.5), ("metrics.jsonl", 0.5), ("student.safetensors", 0.5),
           ("samples.png", 0.5), ("run.json", 0.5), ("spill-rank0.u8", None)]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name,at", FULL_AT, ids=[f[0] for f in FULL_AT])
def test_a_full_disk_leaves_the_last_good_state_resumable(tmp_path, monkeypatch, uninterrupted, name, at):
    cfg, out = SPILLED, tmp_path / "run"
    full = uninterrupted("spilled", SPILLED)
    decoy = out / "notes.md"
    out.mkdir()
    decoy.write_text("mine")
    with monkeypatch.context() as patch:
        if name.startswith("spill"):  # the spill file reserves its blocks when it grows (fdk/bank_storage.py)
            patch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        else:
            fail_writes(patch, name, int(at * full["sizes"][name]))
        with pytest.raises(FdkError) as error:
            run(cfg, out)
    text = str(error.value)
    assert f"writing {out / name} failed: " in text and "(errno 28); it needs " in text and " free there; " in text
    assert "\n" not in text
    if (out / "checkpoint.pt").exists():
        assert text.endswith(f"free space, then continue with fdk distill --resume {out}")
        fdk.checkpoint.load_checkpoint(out / "checkpoint.pt")  # the last good one is readable
        assert not list(out.glob(".*.tmp"))  # and no half-written temporary is left
        run(cfg, out, resume=True)
    else:
        assert text.endswith("free space, then run the command again with --overwrite")
        run(cfg, out, overwrite=(out / "run.json").exists())
    assert_same(outcome(out), full)
    assert decoy.read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["checkpoint.pt", "model.safetensors"])
def test_a_full_disk_in_teacher_training_loses_nothing(tiny_cifar10, tmp_path, monkeypatch, name):
    cfg = dataclasses.replace(RECIPES["cpu"], arch="resnet8", epochs=2, batch_size=8)
    train_teacher(cfg, tiny_cifar10, tmp_path / "full", "cpu", progress=False)
    size = (tmp_path / "full" / name).stat().st_size
    with monkeypatch.context() as patch:
        fail_writes(patch, name, int(1.5 * size) if name == "checkpoint.pt" else size // 2)  # epoch 1's checkpoint
        with pytest.raises(FdkError, match=rf"writing .*{name} failed: .*; it needs .*continue with fdk "
                           "train-teacher --resume"):  # fmt: skip
            train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", progress=False)
    train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", resume=True, progress=False)
    a = load_model(tmp_path / "full" / "model.safetensors").state_dict()
    b = load_model(tmp_path / "cut" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- whole processes: benchmarks/faults.py's trials -----------------------------------------------------------


def _faults():
    spec = importlib.util.spec_from_file_location("faults", ROOT / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    return _faults().Trials(tmp_path_factory.mktemp("faults"), seed=0)


PROCESS_TRIALS = [
    ("kill9", {"spill": True}),  # kill -9 at a random moment, with a disk spill
    ("kill9_at", {"point": "bank.u8@0.5"}),  # during a bank append
    ("kill9_at", {"point": "spill@3"}),  # during a disk spill
    ("kill9_at", {"point": "student.safetensors@0.5"}),  # during the final write
    ("sigterm", {}),
    ("sigint", {}),
    ("two_signals", {}),
    ("enospc", {"point": "checkpoint.pt@2.5"}),  # the CLI: one line, exit 2
    ("concurrent", {}),
    ("ddp_locked", {}),
    ("ddp_kill9", {"point": "rank1.pt@2.5"}),  # one rank killed while it writes its checkpoint part
    ("ddp_sigterm", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,options", PROCESS_TRIALS, ids=[f"{k}-{o.get('point', '')}" for k, o in PROCESS_TRIALS])
def test_process_level_faults(trials, kind, options):
    row = trials.run(kind, **options)
    assert row["survived"], row
    assert row["bytes_lost"] == 0
