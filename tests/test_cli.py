"""The command line: --help everywhere, one override style, --resume DIR, and every bad input answered
with exit status 2, one line naming the problem and the fix, and nothing written."""

import json
import subprocess
import sys

import pytest
import torch

from fdk.checkpoint import save_weights
from fdk.cli import build_parser, main
from fdk.distill import distill
from fdk.models import EMBEDDED_TEACHER, create_model, load_model
from fdk.presets import get_preset
from fdk.train import RECIPES, train_teacher

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)
# A distillation small enough for seconds: two epochs, tiny batches, a resnet8 student.
TINY = ["--set", "epochs=3", "--set", "warmup=1", "--set", "synth_batch_size=8", "--set", "kd_batch_size=8",
        "--set", "ep_steps=2", "--set", "kd_steps=2", "--set", "synth_steps=1", "--set", "student=resnet8",
        "--set", "ngf=8", "--set", "nz=16"]  # fmt: skip


def run(*args):
    return subprocess.run([sys.executable, "-m", "fdk", *args], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: fdk {name}" in text and "--" in text


def test_unknown_subcommand_exits_2():
    out = run("distil-everything")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def _teacher_files(tmp_path):
    """Weights files for the bad-input cases."""
    tmp_path.mkdir()
    files = {}
    files["truncated.safetensors"] = tmp_path / "truncated.safetensors"
    data = EMBEDDED_TEACHER.read_bytes()
    files["truncated.safetensors"].write_bytes(data[: len(data) // 3])
    files["corrupt.pth"] = tmp_path / "corrupt.pth"
    files["corrupt.pth"].write_bytes(b"not a checkpoint" * 64)
    files["cifar100.safetensors"] = tmp_path / "cifar100.safetensors"
    save_weights(create_model("resnet20", 100).state_dict(), files["cifar100.safetensors"], arch="resnet20",
                 num_classes=100, dataset="cifar100")  # fmt: skip
    files["100-classes.pth"] = tmp_path / "100-classes.pth"
    torch.save({"state_dict": create_model("resnet20", 100).state_dict()}, files["100-classes.pth"])
    files["wrn16_1.safetensors"] = tmp_path / "wrn16_1.safetensors"
    save_weights(create_model("wrn16_1").state_dict(), files["wrn16_1.safetensors"], arch="wrn16_1", dataset="cifar10")
    return files


TEACHER = str(EMBEDDED_TEACHER)
DISTILL = ["distill", "--preset", "smoke/fast_meta", "--data", ""]
# (case, argv after `fdk`, expected text); {tmp} is the test's folder, {file:NAME} a file from _teacher_files
BAD_INPUTS = [
    ("unknown architecture", [*DISTILL, "--teacher", TEACHER, "--set", "student=resnet99"],
     "student='resnet99' is not a zoo architecture; choose one of"),
    ("unknown field", [*DISTILL, "--teacher", TEACHER, "--set", "studnet=wrn16_1"], "DistillConfig has no field 'studnet'"),
    ("bad value type", [*DISTILL, "--teacher", TEACHER, "--set", "epochs=ten"], "epochs='ten': not a valid int"),
    ("bad choice", [*DISTILL, "--teacher", TEACHER, "--set", "meta=maml2"], "meta='maml2' is not valid; choose one of maml, reptile"),
    ("not key=value", [*DISTILL, "--teacher", TEACHER, "--set", "epochs"], "--set expects key=value"),
    ("unknown preset", ["distill", "--preset", "cifar10/wrn40_2-wrn16_2/fast3", "--teacher", TEACHER], "unknown preset"),
    ("missing weights", [*DISTILL, "--teacher", "{tmp}/nope.pth"], "nope.pth does not exist; check the path"),
    ("truncated weights", [*DISTILL, "--teacher", "{file:truncated.safetensors}"], "truncated or corrupt"),
    ("corrupt weights", [*DISTILL, "--teacher", "{file:corrupt.pth}"], "truncated or corrupt"),
    ("teacher of another dataset", [*DISTILL, "--teacher", "{file:cifar100.safetensors}"],
     "the teacher was trained on cifar100 (its weights' metadata) but the config says dataset=cifar10"),
    ("teacher with another class count", [*DISTILL, "--teacher", "{file:100-classes.pth}"],
     "the teacher outputs 100 classes but cifar10 has 10; --set dataset=cifar100"),
    ("teacher of another architecture", [*DISTILL, "--teacher", "{file:wrn16_1.safetensors}"],
     "holds a wrn16_1 (its metadata) but the config's teacher is resnet20; --set teacher=wrn16_1"),
    ("missing data folder", ["distill", "--preset", "smoke/fast_meta", "--teacher", TEACHER, "--data", "{tmp}/none"],
     "no cifar10 test split found under"),
    ("resume a non-run folder", ["distill", "--resume", "{tmp}"], "is not an fdk run folder (no run.json)"),
    ("no teacher", ["distill", "--preset", "smoke/fast_meta"], "needs --preset NAME and --teacher FILE"),
    ("teacher: missing data", ["train-teacher", "--data", "{tmp}/none"], "expected class folders"),
    ("teacher: bad field", ["train-teacher", "--set", "arch=resnet99"], "arch='resnet99' is not a zoo architecture"),
    ("teacher: bad value", ["train-teacher", "--set", "epochs=-3"], "epochs must be at least 1"),
    ("evaluate: missing weights", ["evaluate", "--weights", "{tmp}/t.pth", "--data", "{tmp}"], "does not exist"),
    ("bad device", [*DISTILL, "--teacher", TEACHER, "--device", "tpu:9"], "unknown device 'tpu:9'"),
    ("a folder as teacher", [*DISTILL, "--teacher", "weights"], "weights file weights is a folder, not a file"),
    ("no KD epoch", [*DISTILL, "--teacher", TEACHER, "--set", "warmup=50", "--set", "epochs=3"],
     "warmup=50 with epochs=3 leaves no epoch to distil in"),
    ("adversarial term never on", [*DISTILL, "--teacher", TEACHER, "--set", "adv_start=30"],
     "adv_start=30 with epochs=20: the adversarial term would never be on"),
    ("bank smaller than a batch", [*DISTILL, "--teacher", TEACHER, "--set", "bank_capacity=10"],
     "bank_capacity=10 is smaller than one batch (synth_batch_size=96, kd_batch_size=96)"),
    ("no cosine schedule", [*DISTILL, "--teacher", TEACHER, "--set", "cosine_t_max=0"], "cosine_t_max=0"),
    ("zero temperature", [*DISTILL, "--teacher", TEACHER, "--set", "T=0"], "T=0.0: the KD temperature must be"),
    ("no evaluation interval", [*DISTILL, "--teacher", TEACHER, "--set", "eval_every=0"], "eval_every must be at least 1"),
    ("resume with --set", ["distill", "--resume", "{tmp}", "--set", "lr=0.1"], "drop --set"),
    ("teacher: no step schedule", ["train-teacher", "--set", "step_epochs=0"], "step_epochs must be at least 1"),
]  # fmt: skip


@pytest.mark.parametrize("case,argv,expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, argv, expected, tmp_path, capsys):
    files = _teacher_files(tmp_path / "files")
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv = [str(files[a[6:-1]]) if a.startswith("{file:") else a for a in argv]
    if argv[0] in ("distill", "train-teacher") and "--resume" not in argv:
        argv += ["--out", str(out), "--no-progress"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fdk {argv[0]}: error: "), err
    assert expected in lines[0], lines[0]
    assert not out.exists(), "nothing may be written before every input is checked"


def test_distill_then_resume_from_the_run_folder(tmp_path, capsys):
    """An interrupted run, continued by `fdk distill --resume DIR` alone, ends exactly where an
    uninterrupted CLI run ends."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*DISTILL, "--teacher", TEACHER, *TINY, "--out", str(full), "--no-progress"]) == 0
    capsys.readouterr()
    # the same run, interrupted after epoch 0 (as a crash or Ctrl-C would leave it)
    cfg = get_preset("smoke/fast_meta")
    import dataclasses

    from fdk.config import override

    cfg = override(cfg, [a for a in TINY if a != "--set"])
    assert dataclasses.asdict(cfg) == json.loads((full / "run.json").read_text())["config"]
    distill(
        cfg,
        load_model(EMBEDDED_TEACHER),
        None,
        cut,
        progress=False,
        on_epoch=lambda r: r["epoch"] >= 0,
        run_info={"data": ""},
    )
    assert not (cut / "student.safetensors").exists()
    assert main(["distill", "--resume", str(cut), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(cut) and result["images_synthesized"] == 3 * 8
    a = load_model(full / "student.safetensors").state_dict()
    b = load_model(cut / "student.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(line).get("epoch") for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, None]  # no duplicate lines, then the end record


def test_train_then_resume_then_evaluate(tiny_cifar10, tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    common = ["--recipe", "cpu", "--set", "arch=resnet8", "--set", "epochs=2", "--set", "batch_size=8",
              "--data", str(tiny_cifar10), "--no-progress"]  # fmt: skip
    assert main(["train-teacher", *common, "--out", str(full)]) == 0
    from fdk.config import override

    cfg = override(RECIPES["cpu"], ["arch=resnet8", "epochs=2", "batch_size=8"])
    train_teacher(cfg, tiny_cifar10, cut, "cpu", progress=False, on_epoch=lambda r: r["epoch"] >= 0)
    capsys.readouterr()
    assert main(["train-teacher", "--resume", str(cut), "--no-progress"]) == 0
    a = load_model(full / "model.safetensors").state_dict()
    b = load_model(cut / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(cut / "model.safetensors"), "--data", str(tiny_cifar10)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "cifar10" and 0 <= result["top1"] <= 100 and result["top5"] >= result["top1"]


def test_resume_refuses_the_other_job(tmp_path, capsys, tiny_cifar10):
    from fdk.config import override

    cfg = override(RECIPES["cpu"], ["arch=resnet8", "epochs=1", "batch_size=8"])
    train_teacher(cfg, tiny_cifar10, tmp_path, "cpu", progress=False)
    assert main(["distill", "--resume", str(tmp_path)]) == 2
    assert "holds a train-teacher run, not distill" in capsys.readouterr().err
