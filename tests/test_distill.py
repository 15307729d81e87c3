import dataclasses
import json

import pytest
import torch

from fdk.checkpoint import load_checkpoint
from fdk.distill import distill
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import FAST_K, PAIRS, PRESETS, DistillConfig, get_preset
from fdk.utils import FdkError

TINY = dataclasses.replace(
    PRESETS["smoke/fast_meta"],
    teacher="resnet8",
    student="resnet8",
    epochs=3,
    warmup=1,
    ep_steps=3,
    kd_steps=3,
    synth_batch_size=8,
    kd_batch_size=8,
    synth_steps=2,
    nz=8,
    ngf=4,
    cosine_t_max=2,
    reset_l0_at=1,
)


def tiny_teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(create_model("resnet8", 10), mean_std=0.3)


def state(run):
    out = {f"student.{k}": v for k, v in run["student"].state_dict().items()}
    synth = run["synthesizer"].state_dict()
    out.update({f"generator.{k}": v for k, v in synth.get("generator", {}).items()})
    out.update({f"bn_ema.{i}": v for i, v in enumerate(synth["bn_loss"]["var_ema"]) if v is not None})
    out["bank"] = run["bank"].images
    return out


@pytest.mark.parametrize("method", ["fast_meta", "deepinversion"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, method):
    cfg = dataclasses.replace(TINY, method=method, synth_steps=2 if method == "fast_meta" else 4)
    full = distill(cfg, tiny_teacher(), out_dir=tmp_path / "full", device="cpu", progress=False)
    distill(cfg, tiny_teacher(), out_dir=tmp_path / "cut", device="cpu", progress=False, stop_after_epoch=0)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 0
    resumed = distill(cfg, tiny_teacher(), out_dir=tmp_path / "cut", device="cpu", progress=False, resume=True)
    a, b = state(full), state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "epoch" in r] == [0, 1, 2]
    assert (tmp_path / "cut" / "samples.png").exists() and (tmp_path / "cut" / "student.safetensors").exists()


def test_checkpoint_holds_everything(tmp_path):
    distill(TINY, tiny_teacher(), out_dir=tmp_path, device="cpu", progress=False, stop_after_epoch=1)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"config", "epoch", "student", "optimizer", "scheduler", "synthesizer", "bank", "rng", "seconds"} <= set(
        ckpt
    )
    assert {"generator", "meta_optimizer", "bn_loss", "calls"} <= set(ckpt["synthesizer"])
    assert ckpt["synthesizer"]["calls"] == 2 and len(ckpt["bank"]["images"]) == 16
    assert all(m is not None for m in ckpt["synthesizer"]["bn_loss"]["mean_ema"])
    assert DistillConfig(**{**ckpt["config"]}) == TINY


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = dataclasses.replace(TINY, lr=1e30)
    with pytest.raises(FdkError, match="non-finite in epoch 1"):
        distill(cfg, tiny_teacher(), out_dir=tmp_path, device="cpu", progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FdkError, match="cannot resume"):
        distill(TINY, tiny_teacher(), out_dir=tmp_path, device="cpu", resume=True)


def test_schedule_counts(tmp_path):
    """Warm-up epochs synthesise only; then kd_steps per call; cosine steps once per KD epoch."""
    records = []
    cfg = dataclasses.replace(TINY, epochs=4, warmup=2, cosine_t_max=2, eta_min=0.0, lr=0.1)
    run = distill(cfg, tiny_teacher(), device="cpu", progress=False, on_epoch=records.append)
    assert [r["kd_loss"] is None for r in records] == [True, True, False, False]
    assert [r["bank_size"] for r in records] == [8, 16, 24, 32]
    assert [round(r["lr"], 6) for r in records] == [0.1, 0.1, 0.05, 0.0]
    assert run["images_synthesized"] == 32 and run["kd_seconds"] > 0 and run["synth_seconds"] > 0


def test_paper_presets():
    names = [p for p in PRESETS if not p.startswith("smoke/") and "resnet20" not in p]
    assert len(names) == 2 * 5 * 4  # every line of Table 1
    assert "cifar10/resnet20-wrn16_1/fast5" in PRESETS  # the embedded teacher's line
    cfg = get_preset("cifar100/resnet34-resnet18/fast2")
    assert (cfg.w_adv, cfg.w_oh, cfg.lr_gen, cfg.lr_z, cfg.synth_steps) == (1.33, 0.5, 5e-3, 0.015, 2)
    cfg = get_preset("cifar10/wrn40_2-wrn16_2/fast10")
    assert (cfg.epochs, cfg.warmup, cfg.kd_steps, cfg.ep_steps, cfg.synth_batch_size, cfg.kd_batch_size) == (
        220,
        20,
        400,
        400,
        256,
        256,
    )
    assert (cfg.w_bn, cfg.bn_mmt, cfg.T, cfg.lr, cfg.weight_decay, cfg.cosine_t_max, cfg.eta_min) == (
        10.0,
        0.9,
        20.0,
        0.2,
        1e-4,
        200,
        2e-4,
    )
    assert cfg.meta == "maml" and cfg.reset_l0 and cfg.reset_l0_at == 120 and cfg.lr_gen * cfg.synth_steps == 0.02
    for (teacher, student), (w_adv, w_oh) in PAIRS.items():
        for k, (lr_gen, lr_z) in FAST_K.items():
            cfg = get_preset(f"cifar10/{teacher}-{student}/fast{k}")
            assert (cfg.w_adv, cfg.w_oh, cfg.lr_gen, cfg.lr_z) == (w_adv, w_oh, lr_gen, lr_z)
    deep = get_preset("cifar10/wrn40_2-wrn16_1/deepinv2k")
    assert (deep.method, deep.synth_steps, deep.lr_gen, deep.lr, deep.epochs) == ("deepinversion", 2000, 0.1, 0.1, 200)
    with pytest.raises(FdkError, match="unknown preset"):
        get_preset("cifar10/wrn40_2-wrn16_2/fast3")
    assert {"smoke/fast_meta", "smoke/fast", "smoke/no_reuse", "smoke/deepinversion"} <= set(PRESETS)
