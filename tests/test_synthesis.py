"""Synthesizers against explicit computations of the reference doc's pseudo-code (§1.4, §1.10)."""

import copy
import dataclasses

import pytest
import torch

from fdk.augment import normalize
from fdk.generator import DeepGenerator, Generator, reset_l0
from fdk.hooks import BNStatisticsLoss
from fdk.losses import one_hot_loss
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.synthesis import GENERATOR_BETAS, make_synthesizer

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def tiny_cfg(**changes):
    base = dict(
        synth_batch_size=6, synth_steps=3, nz=8, ngf=4, w_adv=0.0, warmup=0, reset_l0=False, channels_last=False
    )
    return dataclasses.replace(PRESETS["smoke/fast_meta"], **{**base, **changes})


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(create_model("resnet8", 10), mean_std=0.3).eval()


def agreeing_student(teacher):
    """A slightly perturbed copy of the teacher: agrees on most samples, with a non-zero KL."""
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            if p.numel() > 1:
                p.add_(0.01 * p.std() * torch.randn_like(p))
    return student.train().requires_grad_(True)


def synthesizer(cfg, teacher):
    s = make_synthesizer(cfg, teacher, 10, MEAN, STD, 32)
    if hasattr(s, "augment"):
        s.augment = lambda x: x  # deterministic, so an explicit recomputation can follow the same draws
    return s


def capture_meta_grads(synth):
    captured = []
    step = synth.meta_optimizer.step

    def spy(*args, **kwargs):
        captured.append([p.grad.clone() for p in synth.generator.parameters()])
        return step(*args, **kwargs)

    synth.meta_optimizer.step = spy
    return captured


def explicit_inner_gradients(cfg, teacher, generator, seed):
    """§1.10 written out: θ' = copy(θ); fresh Adam on (θ', z); per step, the gradient w.r.t. θ'."""
    torch.manual_seed(seed)
    targets = torch.randint(10, (cfg.synth_batch_size,))
    z = torch.randn(cfg.synth_batch_size, cfg.nz, requires_grad=True)
    fast = copy.deepcopy(generator)
    inner = torch.optim.Adam(
        [{"params": fast.parameters()}, {"params": [z], "lr": cfg.lr_z}], lr=cfg.lr_gen, betas=GENERATOR_BETAS
    )
    bn_loss = BNStatisticsLoss(teacher, cfg.bn_mmt)
    grads = []
    for _ in range(cfg.synth_steps):
        with bn_loss.attached():
            t = teacher(normalize(fast(z), MEAN, STD))
            loss = cfg.w_bn * bn_loss.loss() + cfg.w_oh * one_hot_loss(t, targets)
        inner.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in fast.parameters()])
        inner.step()
    return grads, fast


def test_meta_gradient_is_the_sum_of_inner_gradients(teacher):
    cfg = tiny_cfg(meta="maml")
    synth = synthesizer(cfg, teacher)
    before = copy.deepcopy(synth.generator)
    captured = capture_meta_grads(synth)
    student = create_model("resnet8", 10)
    torch.manual_seed(7)
    synth.synthesize(student)
    grads, _ = explicit_inner_gradients(cfg, teacher, before, seed=7)
    summed = [sum(step[i] for step in grads) for i in range(len(grads[0]))]
    assert len(captured) == 1
    for got, want in zip(captured[0], summed):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    last_only = grads[-1]
    assert not all(torch.allclose(g, w, rtol=1e-3) for g, w in zip(captured[0], last_only))


def test_meta_step_is_adam_with_lr_gen_times_k(teacher):
    cfg = tiny_cfg()
    synth = synthesizer(cfg, teacher)
    assert synth.meta_optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr_gen * cfg.synth_steps)
    assert synth.meta_optimizer.param_groups[0]["betas"] == (0.5, 0.999)


def test_reptile_update_equals_the_formula(teacher):
    cfg = tiny_cfg(meta="reptile")
    synth = synthesizer(cfg, teacher)
    before = [p.detach().clone() for p in synth.generator.parameters()]
    captured = capture_meta_grads(synth)
    synth.synthesize(create_model("resnet8", 10))
    fast = [p.detach() for p in synth.fast_generator.parameters()]
    for got, theta, theta_k in zip(captured[0], before, fast):
        assert torch.allclose(got, 67.0 * (theta - theta_k))
    assert any((theta - theta_k).abs().sum() > 0 for theta, theta_k in zip(before, fast))


def test_inner_optimiser_is_fresh_every_call(teacher, monkeypatch):
    states_at_first_step = []
    original = torch.optim.Adam

    class SpyAdam(original):
        def step(self, *args, **kwargs):
            if not getattr(self, "_stepped", False):
                states_at_first_step.append(len(self.state))
                self._stepped = True
            return super().step(*args, **kwargs)

    cfg = tiny_cfg()
    synth = synthesizer(cfg, teacher)
    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    student = create_model("resnet8", 10)
    synth.synthesize(student)
    synth.synthesize(student)
    # two inner optimisers, each with empty state when it takes its first step (meta Adam was built before)
    assert states_at_first_step == [0, 0]


def test_keeps_the_lowest_loss_batch_before_its_update(teacher):
    cfg = tiny_cfg(synth_steps=5, lr_gen=0.05)
    synth = synthesizer(cfg, teacher)
    out = synth.synthesize(create_model("resnet8", 10), snapshot_every=1)
    assert out.images.dtype == torch.uint8 and out.images.shape == (6, 3, 32, 32)
    assert [s for s, _ in out.snapshots] == list(range(5))
    best_step = int(out.step_losses.argmin())
    assert torch.equal(out.images, out.snapshots[best_step][1])


def test_hooks_are_active_only_during_synthesis(teacher):
    synth = synthesizer(tiny_cfg(), teacher)
    synth.synthesize(create_model("resnet8", 10))
    assert all(len(m._forward_hooks) == 0 for m in teacher.modules())


def test_student_is_restored_after_synthesis(teacher):
    student = agreeing_student(teacher)
    synth = synthesizer(tiny_cfg(w_adv=1.0), teacher)
    out = synth.synthesize(student)
    assert student.training and all(p.requires_grad for p in student.parameters())
    assert out.terms["loss_adv"] != 0  # the adversarial term ran (warmup=0)


def test_adversarial_term_starts_at_call_warmup(teacher):
    synth = synthesizer(tiny_cfg(w_adv=1.0, warmup=3), teacher)
    student = agreeing_student(teacher)
    active = [synth.synthesize(student).terms["loss_adv"] != 0 for _ in range(4)]
    assert active == [False, False, True, True]  # calls 1..4: on from call 3 = epoch index warmup - 1


def test_reuse_modes(teacher):
    student = create_model("resnet8", 10)
    results = {}
    for method in ("fast_meta", "fast", "no_reuse"):
        torch.manual_seed(0)
        synth = synthesizer(tiny_cfg(method=method), teacher)
        before = torch.cat([p.detach().flatten() for p in synth.generator.parameters()]).clone()
        synth.synthesize(student)
        after = torch.cat([p.detach().flatten() for p in synth.generator.parameters()])
        results[method] = (before, after, synth)
    before, after, synth = results["fast_meta"]
    assert not torch.equal(before, after) and synth.fast_generator is not synth.generator
    before, after, synth = results["fast"]
    assert not torch.equal(before, after) and synth.fast_generator is None
    # no_reuse: a second call starts again from a fresh initialisation, not from the optimised one
    _, after1, synth = results["no_reuse"]
    torch.manual_seed(123)
    synth.synthesize(student)
    assert not torch.equal(after1, torch.cat([p.detach().flatten() for p in synth.generator.parameters()]))


def test_reset_l0_fires_once_at_call_reset_l0_at_plus_warmup(teacher, monkeypatch):
    import fdk.synthesis

    calls = []
    monkeypatch.setattr(fdk.synthesis, "reset_l0", lambda g: calls.append(synth.calls))
    synth = synthesizer(tiny_cfg(reset_l0=True, reset_l0_at=2, warmup=1, synth_steps=1), teacher)
    student = create_model("resnet8", 10)
    for _ in range(5):
        synth.synthesize(student)
    assert calls == [3]


def test_reset_l0_initialisation():
    g = Generator()
    conv_before = g.conv_blocks[2].weight.clone()
    reset_l0(g)
    assert abs(g.l1[0].weight.std().item() - 0.02) < 0.002 and g.l1[0].bias.abs().sum() == 0
    gamma = g.conv_blocks[0].weight  # the first BN: γ ~ N(0, 0.02), not 1 (§1.6)
    assert gamma.abs().mean() < 0.05 and g.conv_blocks[0].bias.abs().sum() == 0
    assert torch.equal(g.conv_blocks[2].weight, conv_before)


def test_generator_sizes():
    assert sum(p.numel() for p in Generator().parameters()) == 2_328_899  # §1.2
    assert Generator()(torch.randn(2, 256)).shape == (2, 3, 32, 32)
    assert Generator(img_size=128)(torch.randn(1, 256)).shape == (1, 3, 128, 128)
    deep = DeepGenerator()
    # upstream's 1,398,403 minus the unused 805,952-parameter l1 (§1.2)
    assert sum(p.numel() for p in deep.parameters()) == 1_398_403 - 805_952
    out = deep(torch.randn(1, *deep.latent_shape()))
    assert out.shape == (1, 3, 224, 224) and 0 <= out.min() and out.max() <= 1


def test_deepinversion_optimises_pixels_and_lowers_the_loss(teacher):
    cfg = tiny_cfg(method="deepinversion", synth_steps=30, lr_gen=0.1, w_oh=1.0)
    synth = make_synthesizer(cfg, teacher, 10, MEAN, STD, 32)
    out = synth.synthesize(create_model("resnet8", 10))
    assert out.step_losses[-5:].mean() < out.step_losses[:5].mean()
    assert out.images.dtype == torch.uint8 and out.images.shape == (6, 3, 32, 32)


def test_meta_initialisation_beats_no_reuse(teacher):
    """Figure 2 in miniature: the loss at inner step 0 (the initialisation itself) falls across calls
    with meta-learning, and stays where it was when the generator is re-initialised every call."""
    student = create_model("resnet8", 10)
    first_losses = {}
    for method in ("fast_meta", "no_reuse"):
        torch.manual_seed(0)
        synth = synthesizer(tiny_cfg(method=method, synth_steps=2, lr_gen=0.01, ngf=8), teacher)
        losses = [synth.synthesize(student).step_losses[0].item() for _ in range(20)]
        first_losses[method] = (sum(losses[:3]) / 3, sum(losses[-3:]) / 3)
    meta_start, meta_end = first_losses["fast_meta"]
    _, no_reuse_end = first_losses["no_reuse"]
    assert meta_end < 0.95 * meta_start
    assert meta_end < 0.95 * no_reuse_end
