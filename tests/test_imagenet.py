"""FastDFKD at ImageNet scale (docs/method.md §13): the presets hold the logged settings, the synthesizer
meta-learns the generator and the latent with unscaled Reptile, re-draws z every reinit_z calls, keeps the
last batch, and the presets run end to end on the CPU at reduced size (CLI included), with an init set."""

import dataclasses
import json

import pytest
import torch

import fdk
from fdk.cli import main as cli
from fdk.data import ImageTensors
from fdk.generator import DeepGenerator
from fdk.inputs import dataset_spec
from fdk.methods import make_synthesizer
from fdk.models import create_model
from fdk.presets import PRESETS
from fdk.utils import FdkError

SMALL = dataclasses.replace(dataset_spec("imagenet"), image_size=64)  # reduced size: 4x4 latent, 64 px images


def reduced(name: str, **changes):
    """A paper preset shrunk to seconds on a CPU: same method and losses, tiny counts."""
    small = dict(epochs=2, ep_steps=2, kd_steps=1, synth_batch_size=2, kd_batch_size=4, synth_steps=2, ngf=8,
                 cosine_t_max=2, reinit_z=3)  # fmt: skip
    return dataclasses.replace(PRESETS[name], **{**small, **changes})


@pytest.mark.parametrize("student,w_adv", [("resnet50", 0.1), ("resnet18", 1.0), ("mobilenetv2", 0.1)])
def test_presets_hold_the_logged_settings(student, w_adv):
    cfg = PRESETS[f"imagenet/resnet50-{student}/fast50"]
    assert (cfg.teacher, cfg.student, cfg.method) == ("resnet50_imagenet", f"{student}_imagenet", "fast_meta_imagenet")
    assert (cfg.epochs, cfg.calls_per_epoch, cfg.kd_steps, cfg.synth_batch_size, cfg.kd_batch_size) == (400, 10, 100, 100, 100)
    assert (cfg.synth_steps, cfg.lr_gen, cfg.lr_z, cfg.meta_lr, cfg.meta_lr_z, cfg.reinit_z) == (50, 2e-4, 0.01, 1e-4, 5e-3, 50)
    assert (cfg.meta, cfg.reptile_scale, cfg.w_bn, cfg.w_oh, cfg.w_adv, cfg.bn_mmt) == ("reptile", 1.0, 0.1, 0.1, w_adv, 0.9)
    assert (cfg.lr, cfg.T, cfg.cosine_t_max, cfg.eta_min, cfg.adversarial_from) == (0.1, 5.0, 400, 0.0, 0)
    assert (cfg.synth_augment, cfg.kd_augment, cfg.generator, cfg.reset_l0) == ("resized_crop", "resized_crop", "deep", False)


def test_deep_generator_is_upstreams_without_the_unused_linear():
    g = DeepGenerator()
    assert g(torch.randn(2, 256, 14, 14)).shape == (2, 3, 224, 224)
    assert sum(p.numel() for p in g.parameters()) == 1_398_403 - 805_952  # upstream minus its unused l1


def small_synthesizer(**changes):
    torch.manual_seed(0)
    teacher = create_model("resnet18_imagenet", 1000).eval()
    cfg = reduced("imagenet/resnet50-resnet18/fast50", **changes)
    return make_synthesizer(cfg, teacher, SMALL), teacher


def test_reptile_moves_theta_and_z_to_the_inner_result_unscaled():
    """With a plain SGD(lr=1) meta step, unscaled Reptile lands exactly on θ'_k and z_k."""
    synth, _ = small_synthesizer()
    synth.meta_optimizer = torch.optim.SGD([{"params": synth.generator.parameters()}, {"params": [synth.z]}], lr=1.0)
    z0 = synth.z.detach().clone()
    synth.synthesize()
    for theta, theta_k in zip(synth.generator.parameters(), synth.fast_generator.parameters()):
        torch.testing.assert_close(theta, theta_k, rtol=0, atol=1e-6)
    assert not torch.equal(synth.z, z0)  # z was meta-learned: it moved to the inner loop's z_k


def test_latent_persists_and_is_redrawn_every_reinit_z_calls():
    synth, _ = small_synthesizer(reinit_z=3)
    optimizers, zs = [], []
    for _ in range(4):
        before = synth.z.detach().clone()
        synth.synthesize()
        optimizers.append(synth.meta_optimizer)
        zs.append((before, synth.z.detach().clone()))
    assert optimizers[0] is optimizers[1] and optimizers[2] is not optimizers[1]  # call 3 re-created it
    assert optimizers[3] is optimizers[2]
    step = (zs[0][1] - zs[0][0]).abs().max().item()
    assert 0 < step < 0.1  # a meta step moves z a little (Adam, lr 5e-3)...
    assert (zs[2][1] - zs[1][1]).abs().max().item() > 1.0  # ...a re-draw replaces it with a fresh N(0, 1)


def test_keeps_the_last_batch_not_the_best():
    synth, _ = small_synthesizer(synth_steps=3)
    out = synth.synthesize(snapshot_every=1)
    assert torch.equal(out.images, out.snapshots[-1][1])  # the last forward's images, as upstream's pool


def test_sample_changes_nothing_and_state_round_trips():
    synth, _ = small_synthesizer()
    synth.synthesize()
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in synth.state_dict().items()}
    synth.sample(seed=3)
    torch.testing.assert_close(synth.z.detach(), state["z"], rtol=0, atol=0)
    assert synth.calls == state["calls"]
    twin, _ = small_synthesizer()  # the same teacher (same seed), a fresh synthesizer
    twin.load_state_dict(synth.state_dict())
    torch.manual_seed(5)
    a = synth.synthesize().images
    torch.manual_seed(5)
    b = twin.synthesize().images
    assert torch.equal(a, b)


def test_maml_is_refused_with_the_fix():
    with pytest.raises(FdkError, match="Reptile only.*--set meta=reptile"):
        small_synthesizer(meta="maml")


@pytest.mark.parametrize("student", ["resnet50", "resnet18", "mobilenetv2"])
def test_each_preset_runs_end_to_end_at_reduced_size(student, tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet50_imagenet", 1000).eval()
    cfg = reduced(f"imagenet/resnet50-{student}/fast50")
    test = ImageTensors(torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8), torch.arange(6), SMALL.classes)
    result = fdk.distill(cfg, teacher, test, tmp_path / "run", inputs=SMALL, device="cpu", progress=False)
    summary = result.summary
    assert summary["epochs"] == 2 and summary["images_synthesized"] == 2 * 2 * 2  # epochs x calls x batch
    assert summary["image_shape"] == [3, 64, 64] and summary["final_top1"] is not None
    assert (tmp_path / "run" / "student.safetensors").exists()


def test_init_set_joins_the_bank_and_its_hours_are_reported_apart(tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet18_imagenet", 1000).eval()
    cfg = reduced("imagenet/resnet50-resnet18/fast50", student="resnet18_imagenet", epochs=1)
    first = fdk.distill(cfg, teacher, None, tmp_path / "init", inputs=SMALL, device="cpu", progress=False)
    second = fdk.distill(dataclasses.replace(cfg, init_bank=str(tmp_path / "init")), teacher, None, inputs=SMALL,
                         device="cpu", progress=False)  # fmt: skip
    assert second.summary["init_images"] == first.summary["bank_size"] == 4
    assert second.summary["init_synth_hours"] == pytest.approx(first.summary["synth_hours"])
    assert second.summary["bank_size"] == 4 + second.summary["images_synthesized"]
    assert torch.equal(second.bank.images[:4], first.bank.images)  # the init set comes first, unchanged
    with pytest.raises(FdkError, match="the teacher takes"):
        fdk.distill(dataclasses.replace(cfg, init_bank=str(tmp_path / "init")), teacher, None,
                    inputs=dataclasses.replace(SMALL, image_size=32), device="cpu", progress=False)  # fmt: skip


def test_cli_runs_the_smoke_preset_from_a_torchvision_file(tmp_path, capsys):
    """`fdk distill` with a torchvision ResNet-50 .pth (random weights here; no internet) at 224 px."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    out = tmp_path / "run"
    sets = ["epochs=1", "ep_steps=2", "kd_steps=1", "synth_batch_size=2", "kd_batch_size=2", "synth_steps=1"]
    code = cli(["distill", "--preset", "smoke/imagenet", "--teacher", str(path), "--data", "", "--out", str(out),
                "--device", "cpu", *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images_synthesized"] == 4
    end = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["image_shape"] == [3, 224, 224]


def test_init_set_spilling_to_disk_survives_the_run_folders_start(tmp_path):
    """The init set joins the bank after rank 0 clears the run folder, so a disk spill it starts is kept."""
    torch.manual_seed(0)
    teacher = create_model("resnet18_imagenet", 1000).eval()
    cfg = reduced("imagenet/resnet50-resnet18/fast50", student="resnet18_imagenet", epochs=1)
    fdk.distill(cfg, teacher, None, tmp_path / "init", inputs=SMALL, device="cpu", progress=False)
    spilled = dataclasses.replace(cfg, init_bank=str(tmp_path / "init"), bank_device_images=2, bank_spill="disk")
    run = fdk.distill(spilled, teacher, None, tmp_path / "run", inputs=SMALL, device="cpu", progress=False)
    assert run.bank.spilled > 0 and (tmp_path / "run" / "spill-rank0.u8").exists()
    assert run.summary["bank_size"] == 4 + run.summary["images_synthesized"]
