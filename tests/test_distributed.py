"""Several processes with torchrun (docs/method.md §14), on the CPU with gloo: 2 ranks of tests/ddp_worker.py.

The checks: the meta-generator and the student are identical on every rank after a few calls (the latent
and the bank are each rank's own); a stopped and resumed 2-rank run equals the uninterrupted one on both
ranks; 2 ranks x B images give the same KD step as 1 process x 2B where the maths says they must; and
`fdk distill` runs unchanged under torchrun.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(args, tmp, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FDK_DATA": ""}
    out = subprocess.run([*TORCHRUN, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(out)], out)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)], out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("run", ["meta", "imagenet"])
def test_generator_and_student_identical_across_ranks(ranks, run):
    (r0, r1), _ = ranks
    assert_same(r0[run]["student"], r1[run]["student"])
    assert_same(r0[run]["generator"], r1[run]["generator"])
    # ...and they did train: the student is not its initialisation on either rank (same seed, same init)
    if run == "imagenet":
        assert not torch.equal(r0[run]["z"], r1[run]["z"])  # each rank meta-learns its own latent
        assert not torch.equal(r0[run]["bank"], r1[run]["bank"])  # and synthesises its own images


def test_two_ranks_synthesise_twice_the_images(ranks):
    (r0, _), _ = ranks
    summary = r0["meta"]["summary"]
    assert summary["world_size"] == 2
    assert summary["images_synthesized"] == 2 * summary["bank_size"]  # 2 ranks, each its own bank


def test_resume_on_two_ranks_is_exact(ranks):
    (r0, r1), out = ranks
    for r in (r0, r1):
        assert_same(r["full"]["student"], r["resumed"]["student"])
        assert torch.equal(r["full"]["bank"], r["resumed"]["bank"])
    assert not torch.equal(r0["full"]["bank"], r1["full"]["bank"])
    assert (out / "stopped" / "rank1.pt").exists() and (out / "stopped" / "bank-rank1.u8").exists()


def test_two_ranks_kd_step_equals_one_process_doubled_batch(ranks):
    (r0, r1), _ = ranks
    assert_same(r0["kd_ddp"], r1["kd_ddp"])
    for k, v in r0["kd_doubled"].items():
        torch.testing.assert_close(r0["kd_ddp"][k], v, rtol=1e-5, atol=1e-6)


def test_fdk_distill_cli_runs_under_torchrun(tmp_path):
    run = tmp_path / "run"
    torchrun(["-m", "fdk", "distill", "--preset", "smoke/fast_meta", "--teacher", "weights/cifar10_resnet20.safetensors",
              "--out", str(run), "--data", "", *[a for kv in ("epochs=2", "warmup=1", "ep_steps=2", "kd_steps=2",
              "synth_batch_size=8", "kd_batch_size=8", "synth_steps=1", "ngf=8") for a in ("--set", kv)]],
             tmp_path)  # fmt: skip
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in lines[:-1]] == [0, 1]  # rank 0 alone logs
    assert (run / "student.safetensors").exists() and (run / "rank1.pt").exists()
