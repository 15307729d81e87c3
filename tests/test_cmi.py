"""CMI, contrastive model inversion (docs/method.md §16): the contrastive loss by hand, the feature memory,
the per-call re-initialisation, the features upstream uses, the presets of Table 1, and exact resume."""

import dataclasses
import math

import pytest
import torch

import fdk
from fdk.losses import contrastive_loss
from fdk.methods import make_synthesizer
from fdk.methods.cmi import FeatureMemory
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PAIRS, PRESETS


def test_contrastive_loss_by_hand():
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    global_ = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / T: each row's own column scores 1/T, the other 0
    T = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert contrastive_loss(local, global_, batch=2, T=T).item() == pytest.approx(expected, abs=1e-6)
    # with one negative row appended, the batch rows and the memory rows are averaged apart
    local3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    global3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    logits = local3 @ global3.T / T
    ce = [-(logits[i, i] - torch.logsumexp(logits[i], 0)).item() for i in range(3)]
    assert contrastive_loss(local3, global3, batch=2, T=T).item() == pytest.approx((ce[0] + ce[1]) / 2 + ce[2], abs=1e-6)


def test_global_side_is_a_fixed_target():
    local = torch.randn(3, 4, requires_grad=True)
    global_ = torch.randn(3, 4, requires_grad=True)
    contrastive_loss(local, global_, batch=3, T=0.2).backward()
    assert local.grad is not None and global_.grad is None


def test_feature_memory_is_a_ring_with_uniform_draws():
    memory = FeatureMemory(size=5, dim=2, device="cpu")
    assert len(memory.draw(4)) == 0  # empty: no negatives yet
    memory.add(torch.arange(6.0).view(3, 2))
    assert len(memory.draw(10)) == 3  # only what was added
    memory.add(torch.arange(6.0, 14.0).view(4, 2))  # 7 added into 5 slots: the 2 oldest overwritten
    assert memory.ptr == 2 and memory.added == 7
    assert sorted(memory.data[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0, 12.0]
    twin = FeatureMemory(size=5, dim=2, device="cpu")
    twin.load_state_dict(memory.state_dict())
    assert torch.equal(twin.data, memory.data) and twin.ptr == memory.ptr


def small(**changes):
    torch.manual_seed(0)
    teacher = with_random_bn_statistics(create_model("resnet8", 10)).eval()
    cfg = dataclasses.replace(PRESETS["smoke/cmi"], synth_batch_size=8, synth_steps=3, ngf=8, cmi_negatives=16, **changes)
    return make_synthesizer(cfg, teacher), teacher


def test_a_call_reinitialises_the_generator_trains_the_head_and_fills_the_memory():
    synth, _ = small()
    head = [p.clone() for p in synth.head.parameters()]
    out = synth.synthesize()
    first = [p.clone() for p in synth.generator.parameters()]
    assert synth.memory.added == 8 and out.terms["loss_cr"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(head, synth.head.parameters()))
    synth.synthesize()
    # each call starts from a fresh N(0, 0.02) generator: the second call's result is not the first's continuation
    assert all(p.abs().mean() < 0.2 for p in synth.generator.parameters() if p.ndim > 1)
    assert any(not torch.equal(a, b) for a, b in zip(first, synth.generator.parameters()))
    assert synth.memory.added == 16


def test_sample_changes_nothing():
    synth, _ = small()
    synth.synthesize()
    head = {k: v.clone() for k, v in synth.head.state_dict().items()}
    memory = synth.memory.state_dict()
    synth.sample()
    assert all(torch.equal(head[k], v) for k, v in synth.head.state_dict().items())
    assert synth.memory.added == memory["added"] and torch.equal(synth.memory.state_dict()["data"], memory["data"])
    assert all(p.grad is None for p in synth.head.parameters())


def test_features_follow_upstream():
    """Every BN layer's input for most teachers; the four stages' inputs for ResNet-34 (dims: channels)."""
    synth, _ = small()
    teacher = synth.teacher
    bn_channels = sum(m.num_features for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert synth.memory.data.shape[1] == 2 * bn_channels
    assert PRESETS["cifar10/resnet34-resnet18/cmi500"].cmi_features == "stages"
    assert PRESETS["cifar10/wrn40_2-wrn16_2/cmi500"].cmi_features == "bn"


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_every_table1_line_has_a_cmi500_preset(dataset):
    for teacher, student in PAIRS:
        cfg = PRESETS[f"{dataset}/{teacher}-{student}/cmi500"]
        assert (cfg.method, cfg.synth_steps, cfg.lr_gen, cfg.w_bn, cfg.w_oh, cfg.w_adv) == ("cmi", 500, 1e-3, 1.0, 1.0, 0.5)
        assert (cfg.cr, cfg.cr_T, cfg.cmi_memory, cfg.cmi_negatives, cfg.cmi_head_dim) == (0.8, 0.2, 40960, 4096, 256)
    fast = PRESETS[f"{dataset}/wrn40_2-wrn16_1/cmi5"]
    assert (fast.synth_steps, fast.cr) == (5, 0.0)


def test_cmi_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(PRESETS["smoke/cmi"], epochs=3, warmup=1, synth_batch_size=8, kd_batch_size=8,
                              synth_steps=2, ep_steps=4, kd_steps=4, ngf=8, cmi_negatives=8)  # fmt: skip
    teacher = fdk.load_model(fdk.EMBEDDED_TEACHER)
    full = fdk.distill(cfg, teacher, out_dir=tmp_path / "full", device="cpu", progress=False)
    fdk.distill(cfg, teacher, out_dir=tmp_path / "cut", device="cpu", progress=False, on_epoch=lambda r: r["epoch"] >= 1)
    resumed = fdk.distill(cfg, teacher, out_dir=tmp_path / "cut", device="cpu", progress=False, resume=True)
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(full.bank.images, resumed.bank.images)
    assert torch.equal(full.synthesizer.memory.data, resumed.synthesizer.memory.data)
