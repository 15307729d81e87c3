"""Every subcommand's --help, and bad input: non-zero exit with a one-line reason."""

import json
import subprocess
import sys

import pytest

from fdk.cli import build_parser, main
from tests.conftest import REPO

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


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


def _one_line_error(capsys, argv, expected):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    first = err.strip().splitlines()[0]
    assert first.startswith(f"fdk {argv[0]}: error:") and expected in err
    return err


def test_unknown_subcommand_exits_2():
    out = run("distil-everything")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bad_option_value(capsys, tmp_path):
    _one_line_error(
        capsys,
        ["train-teacher", "--out", str(tmp_path), "--data", str(tmp_path), "--epochs", "ten"],
        "epochs='ten': not a valid int",
    )


def test_missing_data_folder_shows_layout(capsys, tmp_path):
    err = _one_line_error(
        capsys, ["train-teacher", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "nope")], "expected one of"
    )
    assert "train/<class>/<image>.png" in err


def test_evaluate_missing_weights(capsys, tmp_path):
    _one_line_error(
        capsys, ["evaluate", "--weights", str(tmp_path / "t.pth"), "--data", str(tmp_path)], "does not exist"
    )


def test_train_then_evaluate_end_to_end(tiny_cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train-teacher",
                "--recipe",
                "cpu",
                "--arch",
                "resnet8",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--data",
                str(tiny_cifar10),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "model.safetensors").exists() and (out / "checkpoint.pt").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[1]["epoch"] == 0
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(out / "model.safetensors"), "--data", str(tiny_cifar10)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "cifar10" and 0 <= result["top1"] <= 100 and result["top5"] >= result["top1"]


def test_distill_then_resume_from_run_json(tmp_path, capsys):
    """--resume needs only the run folder: teacher, data and config come from run.json."""
    out = tmp_path / "distill"
    tiny = ["--set", "epochs=2", "--set", "warmup=1", "--set", "synth_batch_size=8", "--set", "kd_batch_size=8",
            "--set", "ep_steps=2", "--set", "kd_steps=2", "--set", "synth_steps=1", "--set", "student=resnet8"]  # fmt: skip
    teacher = str(REPO / "weights" / "cifar10_resnet20.safetensors")
    args = ["distill", "--preset", "smoke/fast_meta", "--teacher", teacher, "--data", "", "--out", str(out)]
    assert main([*args, *tiny, "--no-progress"]) == 0
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config"]["epochs"] == 2 and run_json["config"]["student"] == "resnet8"
    capsys.readouterr()
    assert main(["distill", "--resume", str(out), "--no-progress"]) == 0
    assert "resnet8" in (out / "run.json").read_text()
