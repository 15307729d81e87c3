"""The generator baselines of Table 1 (DAFL, ZSKT, DFQ, DFAD; docs/method.md §15): loss terms against hand
computations, the adversarial term with the student in it (upstream's bug #11 fixed), ZSKT's attention
transfer, fresh KD batches instead of a bank, the published generator outputs (gen_head), presets for
every Table-1 line, exact resume. Which smoke runs improve the student on real CIFAR-10:
tests/test_methods_learn.py."""

import dataclasses
import math

import pytest
import torch

import fdk
from fdk.attention import applies, attention_loss, attention_map, stages
from fdk.losses import activation_loss, balance_loss, dfad_adversarial_loss, kl_adversarial_loss
from fdk.methods import make_synthesizer
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import BASELINES, PAIRS, PRESETS
from fdk.utils import FdkError

METHODS = tuple(BASELINES)


def test_balance_loss_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # softmax rows (0.75, 0.25) and (0.5, 0.5)
    p = [0.625, 0.375]  # batch mean
    expected = sum(q * math.log(q) for q in p)
    assert balance_loss(logits).item() == pytest.approx(expected, abs=1e-6)
    assert balance_loss(torch.zeros(4, 10)).item() == pytest.approx(-math.log(10), abs=1e-6)  # its minimum


def test_activation_and_adversarial_losses_by_hand():
    assert activation_loss(torch.tensor([[1.0, -3.0], [2.0, 0.0]])).item() == pytest.approx(-1.5)
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # p_S = (.5, .5), p_T = (.75, .25)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_adversarial_loss(s, t).item() == pytest.approx(-kl, abs=1e-6)
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.0]])  # |S − T| mean = (1 + 2) / 2
    assert dfad_adversarial_loss(s, t).item() == pytest.approx(-math.log(2.5), abs=1e-6)


def test_attention_transfer_by_hand():
    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 0] = torch.tensor([1.0, 1.0])  # mean of squares (1, 0) -> normalised (1, 0)
    g = torch.ones(1, 2, 1, 2)  # (1, 1) -> (0.707, 0.707)
    assert torch.allclose(attention_map(f), torch.tensor([[1.0, 0.0]]))
    expected = ((1 - 2**-0.5) ** 2 + 0.5) / 2
    assert attention_loss([f], [g]).item() == pytest.approx(expected, abs=1e-6)
    assert attention_loss([g, f], [g, f]).item() == 0


def test_attention_applies_where_the_stages_match():
    assert applies(create_model("wrn40_2", 10), create_model("wrn16_1", 10), 32)
    assert applies(create_model("resnet34", 10), create_model("resnet18", 10), 32)
    assert not applies(create_model("vgg11", 10), create_model("resnet18", 10), 32)
    assert len(stages(create_model("wrn16_1", 10))) == 3


def small(method: str, **changes):
    torch.manual_seed(0)
    teacher = with_random_bn_statistics(create_model("resnet8", 10)).eval()
    cfg = dataclasses.replace(PRESETS[f"smoke/{method}"], synth_batch_size=8, ngf=8, **changes)
    return make_synthesizer(cfg, teacher), teacher


@pytest.mark.parametrize("method", ["zskt", "dfq", "dfad"])
def test_the_adversarial_term_uses_the_student_and_pushes_the_generator_away_from_it(method):
    """With the student (not the teacher, upstream's bug #11) the term is non-zero and negative: the generator
    minimises it, i.e. maximises the student-teacher discrepancy. One generator step makes it more negative
    on the same latent codes."""
    synth, teacher = small(method, w_bn=0.0, w_oh=0.0, w_balance=0.0, w_act=0.0, lr_gen=0.05)
    student = create_model("resnet8", 10).eval()
    z = torch.randn(8, synth.cfg.nz)

    def adversarial():
        x, _ = synth.images(synth.generator, z)
        return synth.adversarial_term(student(x), teacher(x)).item()

    with torch.no_grad():
        before = adversarial()
    assert before < 0
    for _ in range(3):
        synth.synthesize(student)
    with torch.no_grad():
        assert adversarial() < before
    x = torch.randn(4, 10)
    assert synth.adversarial_term(x, x).item() == pytest.approx(0.0, abs=1e-6)  # student = teacher: zero


def test_sample_changes_nothing_and_kd_batches_are_fresh():
    synth, _ = small("dafl")
    before = {k: v.clone() for k, v in synth.generator.state_dict().items()}
    synth.sample()
    assert all(torch.equal(before[k], v) for k, v in synth.generator.state_dict().items())
    a = synth.kd_batch(4, synth.inputs.mean, synth.inputs.std)
    b = synth.kd_batch(4, synth.inputs.mean, synth.inputs.std)
    assert a.shape == (4, 3, 32, 32) and not torch.equal(a, b)  # a new z every KD step, no bank


@pytest.mark.parametrize("head", ["tanh_bn", "bn"])
def test_the_published_generator_heads_hand_over_normalised_images(head):
    """DAFL's/DFAD's (tanh_bn) and ZSKT's (bn) own generators end in an affine-free BatchNorm: every channel
    of a batch has mean 0 and variance 1 as the networks see it, with no new parameters (§15)."""
    synth, _ = small("dafl", gen_head=head)
    x = synth.kd_batch(16, synth.inputs.mean, synth.inputs.std)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-2)
    z = torch.randn(16, synth.cfg.nz)
    with torch.no_grad():
        seen, pixels = synth.images(synth.generator, z)
    assert torch.allclose(fdk.augment.normalize(pixels, synth.inputs.mean, synth.inputs.std), seen, atol=1e-5)
    sigmoid, _ = small("dafl")
    assert sum(p.numel() for p in synth.generator.parameters()) == sum(
        p.numel() for p in sigmoid.generator.parameters()
    )
    assert synth.synthesize(create_model("resnet8", 10)).images.dtype == torch.uint8  # pixels for inspection


def test_a_published_head_on_a_method_that_needs_pixels_is_a_clear_error():
    with pytest.raises(FdkError, match="gen_head=sigmoid"):
        dataclasses.replace(PRESETS["smoke/fast_meta"], gen_head="bn")
    with pytest.raises(FdkError, match="gen_head='tanh' is not valid"):
        dataclasses.replace(PRESETS["smoke/dafl"], gen_head="tanh")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_every_table1_line_has_a_preset(dataset):
    for teacher, student in PAIRS:
        for method in METHODS:
            cfg = PRESETS[f"{dataset}/{teacher}-{student}/{method}"]
            assert (cfg.method, cfg.synth_steps, cfg.lr_gen, cfg.epochs, cfg.ep_steps, cfg.lr) == (
                method, 1, 1e-3, 200, 400, 0.1)  # fmt: skip
            assert cfg.kd_loss == ("l1" if method == "dfad" else "kl") and cfg.gen_head == "sigmoid"  # upstream's
            assert cfg.w_at == (250.0 if method == "zskt" and teacher != "vgg11" else 0.0)
    dafl = PRESETS[f"{dataset}/wrn40_2-wrn16_1/dafl"]
    assert (dafl.nz, dafl.w_oh, dafl.w_balance, dafl.w_act, dafl.w_adv) == (512, 1.0, 20.0, 0.001, 0.0)
    dfq = PRESETS[f"{dataset}/wrn40_2-wrn16_1/dfq"]
    assert (dfq.kd_steps, dfq.w_bn, dfq.w_oh, dfq.w_adv, dfq.w_balance) == (10, 1.0, 1.0, 1.0, 20.0)


def test_attention_on_a_pair_without_matching_stages_is_a_clear_error():
    cfg = dataclasses.replace(PRESETS["smoke/zskt"], student="vgg8", epochs=1)
    with pytest.raises(FdkError, match="--set w_at=0"):
        fdk.distill(cfg, fdk.load_model(fdk.EMBEDDED_TEACHER), device="cpu", progress=False)


def test_generator_baseline_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(PRESETS["smoke/zskt"], epochs=3, ep_steps=10, synth_batch_size=8, kd_batch_size=8,
                              ngf=8, eval_every=1)  # fmt: skip
    teacher = fdk.load_model(fdk.EMBEDDED_TEACHER)
    full = fdk.distill(cfg, teacher, out_dir=tmp_path / "full", device="cpu", progress=False)
    fdk.distill(
        cfg, teacher, out_dir=tmp_path / "cut", device="cpu", progress=False, on_epoch=lambda r: r["epoch"] >= 1
    )
    resumed = fdk.distill(cfg, teacher, out_dir=tmp_path / "cut", device="cpu", progress=False, resume=True)
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(
        full.synthesizer.generator.state_dict().values(), resumed.synthesizer.generator.state_dict().values()
    ):
        assert torch.equal(a, b)
    assert len(full.bank) == 0 and full.summary["images_synthesized"] == 3 * 2 * 8


def test_the_cli_runs_a_baseline_preset(tmp_path, capsys):
    from fdk.cli import main as cli

    sets = ["epochs=1", "ep_steps=10", "synth_batch_size=8", "kd_batch_size=8", "ngf=8"]
    code = cli(["distill", "--preset", "smoke/dfad", "--teacher", str(fdk.EMBEDDED_TEACHER), "--data", "",
                "--out", str(tmp_path / "run"), "--device", "cpu", *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0 and (tmp_path / "run" / "student.safetensors").exists()
    assert (tmp_path / "run" / "samples.png").exists()  # no bank: a fresh batch of the generator


def test_without_the_adversarial_term_zskt_has_nothing_to_learn_and_keeps_its_generator():
    """ZSKT's and DFAD's only term is adversarial: before it is on (a warm-up), a call leaves G as it is."""
    synth, _ = small("zskt")
    before = [p.clone() for p in synth.generator.parameters()]
    synth.synthesize(None)  # no student: no adversarial term
    assert all(torch.equal(a, b) for a, b in zip(before, synth.generator.parameters()))
