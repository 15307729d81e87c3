"""Synthesizers against explicit computations of the method's pseudo-code (docs/method.md §2-3)."""

import copy
import dataclasses

import pytest
import torch

from fdk.augment import normalize
from fdk.generator import DeepGenerator, Generator, reset_l0
from fdk.hooks import BNStatisticsLoss
from fdk.inputs import InputSpec
from fdk.losses import one_hot_loss
from fdk.methods import make_synthesizer
from fdk.methods.base import KeepBest
from fdk.methods.generative import GENERATOR_BETAS
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.utils import FdkError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
SPEC = InputSpec(name="test", num_classes=10, image_size=32, mean=MEAN, std=STD)


def tiny_cfg(**changes):
    base = dict(synth_batch_size=6, synth_steps=3, nz=8, ngf=4, w_adv=0.0, reset_l0=False, channels_last=False)
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
    s = make_synthesizer(cfg, teacher, SPEC)
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
    assert out.terms["loss_adv"] != 0  # the adversarial term ran (on by default with a student)


def test_adversarial_term_follows_the_callers_flag(teacher):
    synth = synthesizer(tiny_cfg(w_adv=1.0), teacher)
    student = agreeing_student(teacher)
    assert synth.synthesize(student).terms["loss_adv"] != 0  # on by default when a student is given
    assert synth.synthesize(student, adversarial=False).terms["loss_adv"] == 0
    assert synth.synthesize(None).terms["loss_adv"] == 0
    with pytest.raises(FdkError, match="needs a student"):
        synth.synthesize(None, adversarial=True)


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
    assert not torch.equal(before, after) and not hasattr(synth, "fast_generator")  # no copy, no meta step
    # no_reuse: a second call starts again from a fresh initialisation, not from the optimised one
    _, after1, synth = results["no_reuse"]
    torch.manual_seed(123)
    synth.synthesize(student)
    assert not torch.equal(after1, torch.cat([p.detach().flatten() for p in synth.generator.parameters()]))


def test_reset_l0_fires_once_at_call_reset_l0_call(teacher, monkeypatch):
    import fdk.methods.fast_meta

    calls = []
    monkeypatch.setattr(fdk.methods.fast_meta, "reset_l0", lambda g: calls.append(synth.calls))
    synth = synthesizer(tiny_cfg(reset_l0=True, reset_l0_call=3, synth_steps=1), teacher)
    student = create_model("resnet8", 10)
    for _ in range(5):
        synth.synthesize(student)
    synth.sample()  # evaluation never resets
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
    synth = make_synthesizer(cfg, teacher, SPEC)
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


@pytest.mark.parametrize("method", ["fast_meta", "fast", "no_reuse", "deepinversion"])
def test_sample_changes_nothing(teacher, method):
    """Evaluation's path (docs/method.md §4.4): no meta step, no update, no momentum, no call, same RNG."""
    synth = synthesizer(tiny_cfg(method=method, w_adv=1.0, meta="reptile"), teacher)
    student = agreeing_student(teacher)
    synth.synthesize(student)
    synth.synthesize(student)
    before = copy.deepcopy(synth.state_dict())
    rng = torch.get_rng_state()
    a = synth.sample(student, adversarial=True)
    b = synth.sample(seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    after = synth.state_dict()
    flat_before, flat_after = _flatten(before), _flatten(after)
    assert flat_before.keys() == flat_after.keys()
    for key in flat_before:
        assert torch.equal(torch.as_tensor(flat_before[key]), torch.as_tensor(flat_after[key])), key
    assert torch.equal(synth.sample(seed=0).images, b.images)  # a seed gives the same batch
    assert not torch.equal(synth.sample(seed=1).images, b.images)
    # without a seed the batch is the one the next call would start from: same targets
    assert torch.equal(a.targets.sort().values, synth.synthesize(student).targets.sort().values)


def _flatten(state, prefix=""):
    out = {}
    for key, value in state.items() if isinstance(state, dict) else enumerate(state):
        name = f"{prefix}{key}"
        if isinstance(value, dict | list | tuple):
            out.update(_flatten(value, name + "."))
        elif value is not None:
            out[name] = value
    return out


def test_keep_best_skips_nan():
    keep = KeepBest()
    images = [torch.full((1, 3, 2, 2), float(i)) for i in range(4)]
    for x, loss in zip(images, [5.0, float("nan"), 3.0, float("nan")]):
        keep.update(x, torch.tensor(loss))
    assert torch.equal(keep.images, images[2]) and keep.loss.item() == 3.0
    first_nan = KeepBest()
    first_nan.update(images[0], torch.tensor(float("nan")))
    first_nan.update(images[1], torch.tensor(7.0))
    assert torch.equal(first_nan.images, images[1])  # a finite loss beats a NaN first step


def test_deepinversion_faithful_mode_banks_the_final_clipped_pixels(teacher):
    """Upstream's best_inputs aliases the optimised tensor: the batch it banks is the last, clipped one.
    The state after k steps is what a (k+1)-step run sees at its step k, before its update."""
    cfg = tiny_cfg(method="deepinversion", synth_steps=4, lr_gen=0.1, w_oh=1.0)
    assert (cfg.deepinv_keep, cfg.deepinv_flip, cfg.deepinv_adv) == ("last", "batch", "js")  # the defaults
    torch.manual_seed(3)
    kept = synthesizer(cfg, teacher).synthesize().images
    torch.manual_seed(3)
    longer = synthesizer(dataclasses.replace(cfg, synth_steps=5), teacher).synthesize(snapshot_every=1)
    assert torch.equal(kept, longer.snapshots[4][1])
    torch.manual_seed(3)
    best = synthesizer(dataclasses.replace(cfg, deepinv_keep="best", synth_steps=5), teacher).synthesize(
        snapshot_every=1
    )
    assert torch.equal(best.images, best.snapshots[int(best.step_losses.argmin())][1])


def test_whole_batch_flip():
    from fdk.augment import random_hflip, random_hflip_batch

    x = torch.arange(64.0).view(4, 1, 4, 4)
    for seed in range(10):
        torch.manual_seed(seed)
        out = random_hflip_batch(x)
        assert torch.equal(out, x) or torch.equal(out, x.flip(3))
    mixed = [random_hflip(x) for _ in range(10)]
    assert any(not (torch.equal(m, x) or torch.equal(m, x.flip(3))) for m in mixed)  # per image


def test_deepinversion_upstream_losses(teacher):
    """js mode: loss_adv = −JS(S, T) at T=3 and loss_bn = teacher − 0.001 · student (upstream's CMI code)."""
    import torch.nn.functional as F

    from fdk.losses import js_divergence

    synth = synthesizer(tiny_cfg(method="deepinversion"), teacher)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    # upstream's formula: clipped probabilities and F.kl_div(log P, M) + F.kl_div(log Q, M)
    p, q = F.softmax(s / 3, 1), F.softmax(t / 3, 1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    upstream = 0.5 * F.kl_div(p.clamp(0.01, 0.99).log(), m, reduction="batchmean") + 0.5 * F.kl_div(
        q.clamp(0.01, 0.99).log(), m, reduction="batchmean"
    )
    assert torch.allclose(js_divergence(s, t, 3.0), upstream)
    assert torch.allclose(synth.adversarial_term(s, t), -upstream)

    class Stub:
        def __init__(self, value):
            self.value = torch.tensor(value)

        def loss(self):
            return self.value

    synth.bn_loss, synth._student_bn = Stub(2.0), Stub(5.0)
    assert synth.bn_term().item() == pytest.approx(2.0 - 0.005)
    masked = synthesizer(tiny_cfg(method="deepinversion", deepinv_adv="masked_kl"), teacher)
    assert not torch.allclose(masked.adversarial_term(s, t), -upstream)


def test_a_teacher_is_inverted_in_its_own_input_space():
    """Bring your own teacher (docs/method.md §9): the spec's mean/std, size and classes are used."""
    import torch.nn as nn

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))  # fmt: skip
    with_random_bn_statistics(teacher).eval()
    spec = InputSpec(name="mine", num_classes=5, image_size=16, mean=(0.9, 0.1, 0.5), std=(0.1, 0.1, 0.1))
    seen = []
    teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    synth = make_synthesizer(tiny_cfg(), teacher, spec)
    out = synth.synthesize()
    assert out.images.shape == (6, 3, 16, 16) and int(out.targets.max()) < 5
    x = torch.cat(seen)
    low = [(0 - m) / s for m, s in zip(spec.mean, spec.std)]
    high = [(1 - m) / s for m, s in zip(spec.mean, spec.std)]
    for c in range(3):
        assert low[c] - 1e-4 <= x[:, c].min() and x[:, c].max() <= high[c] + 1e-4
    assert x[:, 0].min() < -8.9  # the crop's zero padding normalised with this teacher's own constants
