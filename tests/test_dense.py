"""Dense (segmentation) data-free distillation against hand computations (docs/method.md §12): the
metrics, the per-pixel inversion terms, the BN loss over every teacher BN, and synthesis for a map."""

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fdk
import fdk.scenes
from fdk.checkpoint import read_metadata
from fdk.data import load_split
from fdk.distill import distill
from fdk.hooks import BNStatisticsLoss
from fdk.inputs import InputSpec, dataset_spec
from fdk.losses import adversarial_loss, kd_loss, l1_logit_loss
from fdk.methods import make_synthesizer
from fdk.models import create_model, with_random_bn_statistics
from fdk.presets import PRESETS
from fdk.reference import distill_on_images, untrained_score
from fdk.run import read_run
from fdk.scenes import make_scenes
from fdk.segmetrics import confusion_matrix, scores
from fdk.train import RECIPES, train_teacher
from fdk.utils import FdkError

SPEC = InputSpec(name="dense-test", num_classes=4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, task="segmentation")


class TinySegNet(nn.Module):
    """conv-BN-ReLU, a strided conv-BN-ReLU, a 'head' BN, logits upsampled to the input size: 3 BN layers."""

    def __init__(self, classes=4, width=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        return F.interpolate(self.classifier(self.head(self.body(x))), size=x.shape[-2:], mode="bilinear")


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(TinySegNet(), mean_std=0.3).eval()


def test_confusion_and_scores_by_hand():
    # 1 image, 2x3 pixels, 3 classes; one pixel ignored (255)
    labels = torch.tensor([[[0, 0, 1], [1, 255, 2]]])
    predicted = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    logits = F.one_hot(predicted, 3).permute(0, 3, 1, 2).float()
    confusion = confusion_matrix(logits, labels, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]  # rows: true 0, 1, 2
    out = scores(confusion)
    # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 2 / (3 + 2 - 2), IoU_2 = 0 / (0 + 1 - 0)
    assert out["iou"] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert out["miou"] == pytest.approx(100 / 3)
    assert out["pixel_acc"] == pytest.approx(60.0)  # 3 of the 5 labelled pixels


def test_a_class_absent_from_labels_and_predictions_is_left_out_of_the_mean():
    confusion = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # class 2 never occurs
    out = scores(confusion)
    assert out["iou"][2] is None
    assert out["miou"] == pytest.approx(100 * (3 / 4 + 2 / 3) / 2)


def test_kd_losses_are_per_pixel_means():
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    by_hand = (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1) - F.log_softmax(s / 4, 1))).sum(1).mean() * 16
    assert kd_loss(s, t, 4.0) == pytest.approx(by_hand.item(), rel=1e-5)
    assert l1_logit_loss(s, t) == pytest.approx((s - t).abs().sum().item() / s.numel(), rel=1e-5)


def test_adversarial_term_masks_pixels_and_averages_over_all_of_them():
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    s[0, :, 0, 0] = t[0, :, 0, 0] + torch.tensor([0.1, 0.0, 0.0, 0.0])  # surely agreeing pixels
    agree = s.argmax(1) == t.argmax(1)
    assert 0 < agree.sum() < agree.numel()
    kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)
    assert adversarial_loss(s, t) == pytest.approx(-(kl * agree).sum().item() / agree.numel(), rel=1e-5)
    assert adversarial_loss(s, t) < 0


def dense_cfg(**changes):
    base = dict(synth_batch_size=3, synth_steps=2, nz=8, ngf=4, w_adv=1.0, reset_l0=False, channels_last=False)
    return dataclasses.replace(PRESETS["smoke/fast_meta"], **{**base, **changes})


@pytest.mark.parametrize("dense_oh", ["self", "off"])
def test_dense_inversion_terms_by_hand(teacher, dense_oh):
    synth = make_synthesizer(dense_cfg(dense_oh=dense_oh), teacher, SPEC)
    student = with_random_bn_statistics(TinySegNet(), mean_std=0.3).eval()
    x = torch.randn(3, 3, 16, 16)
    with synth.bn_loss.attached():
        loss, terms = synth.inversion_loss(x, None, student)
    t, s = teacher(x), student(x)
    expected_oh = F.cross_entropy(t, t.argmax(1)) if dense_oh == "self" else torch.zeros(())
    assert terms["loss_oh"] == pytest.approx(expected_oh.item(), rel=1e-5)
    assert terms["loss_adv"] == pytest.approx(adversarial_loss(s, t).item(), rel=1e-5)
    cfg = synth.cfg
    total = cfg.w_bn * terms["loss_bn"] + cfg.w_oh * terms["loss_oh"] + cfg.w_adv * terms["loss_adv"]
    assert loss.item() == pytest.approx(total.item(), rel=1e-5)


def test_bn_loss_covers_every_teacher_bn_backbone_and_head(teacher):
    loss = BNStatisticsLoss(teacher, momentum=0.0)
    bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 and loss.layers == bns
    with loss.attached():
        teacher(torch.randn(2, 3, 16, 16))
        per_layer = loss.layer_losses()
    assert len(per_layer) == 3 and all(v > 0 for v in per_layer)


@pytest.mark.parametrize("method", ["fast_meta", "fast", "no_reuse", "deepinversion"])
def test_every_method_synthesises_for_a_dense_teacher(teacher, method):
    synth = make_synthesizer(dense_cfg(method=method), teacher, SPEC)
    student = TinySegNet()
    out = synth.synthesize(student)
    assert out.images.shape == (3, 3, 16, 16) and out.images.dtype == torch.uint8 and out.targets is None
    assert torch.isfinite(out.step_losses).all() and out.terms["loss_adv"] <= 0
    before = {k: v.clone() for k, v in synth.state_dict().get("generator", {}).items()}
    synth.sample(student, seed=1)  # evaluation changes nothing, dense or not
    assert all(torch.equal(v, synth.state_dict()["generator"][k]) for k, v in before.items())


def test_dense_config_choices_are_checked():
    with pytest.raises(FdkError, match="dense_oh"):
        dense_cfg(dense_oh="random")
    with pytest.raises(FdkError, match="kd_loss"):
        dense_cfg(kd_loss="mse")
    with pytest.raises(FdkError, match="task"):
        InputSpec(name="x", num_classes=2, image_size=8, mean=(0.5,), std=(0.5,), task="detection")


def test_nyuv2_spec_is_dense_and_round_trips_through_metadata():
    spec = dataset_spec("nyuv2")
    assert spec.dense and spec.num_classes == 13 and spec.ignore_index == 255
    assert InputSpec.from_metadata(spec.to_metadata()) == spec


def scenes_teacher():
    torch.manual_seed(0)
    return with_random_bn_statistics(create_model("segnet_small", 11), mean_std=0.3)


TINY_DENSE = dict(epochs=3, warmup=1, ep_steps=2, kd_steps=2, synth_batch_size=4, kd_batch_size=4, synth_steps=2,
                  nz=8, ngf=4, cosine_t_max=2, reset_l0_call=2, eval_every=1)  # fmt: skip


def test_dense_distillation_resumes_exactly_and_reports_miou(tmp_path, tiny_cifar10):
    """smoke/segmentation shrunk: a run cut after epoch 0 and resumed equals the uninterrupted one, and the
    run files carry mIoU, pixel accuracy and per-class IoU instead of top-1."""
    cfg = dataclasses.replace(PRESETS["smoke/segmentation"], **TINY_DENSE)
    test = make_scenes(load_split(tiny_cifar10, "cifar10", "test"), 6, size=64, seed=1)
    full = distill(cfg, scenes_teacher(), test, tmp_path / "full", device="cpu", progress=False)
    distill(cfg, scenes_teacher(), test, tmp_path / "cut", device="cpu", progress=False, on_epoch=lambda r: True)
    resumed = distill(cfg, scenes_teacher(), test, tmp_path / "cut", device="cpu", progress=False, resume=True)
    for a, b in ((full.student, resumed.student), (full.synthesizer.generator, resumed.synthesizer.generator)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), key
    assert torch.equal(full.bank.images, resumed.bank.images) and full.bank.images.shape[1:] == (3, 64, 64)
    run = read_run(tmp_path / "cut")
    last = run["epochs"][-1]
    assert {"test_miou", "test_pixel_acc", "test_iou", "agreement_new"} <= last.keys() and len(last["test_iou"]) == 11
    assert run["summary"]["final_miou"] == last["test_miou"] and "final_top1" not in run["summary"]
    assert read_metadata(tmp_path / "cut" / "student.safetensors")["task"] == "segmentation"


def test_l1_kd_option_trains_the_student(tmp_path, tiny_cifar10):
    cfg = dataclasses.replace(PRESETS["smoke/segmentation"], **{**TINY_DENSE, "kd_loss": "l1", "epochs": 2})
    result = distill(cfg, scenes_teacher(), device="cpu", progress=False)
    assert result.summary["epochs"] == 2 and result.summary["final_miou"] is None  # no test split given


def test_segmentation_teacher_trains_resumes_and_records_miou(tmp_path, tiny_cifar10, monkeypatch):
    """fdk train-teacher's dense path on a few CIFAR scenes: focal loss, crops, the step schedule, resume."""
    monkeypatch.setattr(fdk.scenes, "SCENE_COUNTS", {"train": 32, "test": 8})
    cfg = dataclasses.replace(
        RECIPES["scenes_cpu"], arch="segnet_tiny", epochs=3, batch_size=8, loss="focal", crop=48, schedule="step",
        step_epochs=1, step_gamma=0.5, warmup_epochs=0,
    )  # fmt: skip
    full = train_teacher(cfg, tiny_cifar10, tmp_path / "full", "cpu", progress=False)
    train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", progress=False, on_epoch=lambda r: r["epoch"] == 1)
    resumed = train_teacher(cfg, tiny_cifar10, tmp_path / "cut", "cpu", progress=False, resume=True)
    assert full == resumed and {"miou", "pixel_acc", "iou", "loss"} <= full.keys()
    run = read_run(tmp_path / "cut")
    assert [round(r["lr"], 6) for r in run["epochs"]] == [0.1, 0.05, 0.025]  # x0.5 per epoch
    assert {"train_pixel_acc", "test_miou"} <= run["epochs"][0].keys()
    teacher = fdk.load_model(tmp_path / "cut" / "model.safetensors")
    assert teacher.input_spec.dense and teacher.input_spec.image_size == 64 and teacher.arch == "segnet_tiny"
    assert read_metadata(tmp_path / "cut" / "model.safetensors")["test_miou"] == full["miou"]


def test_data_driven_reference_runs_the_same_kd_on_real_images(tiny_cifar10):
    cfg = dataclasses.replace(
        PRESETS["smoke/segmentation"], **{**TINY_DENSE, "epochs": 5, "ep_steps": 6, "kd_steps": 6}
    )
    train = make_scenes(load_split(tiny_cifar10, "cifar10", "train"), 16, size=64, seed=0)
    test = make_scenes(load_split(tiny_cifar10, "cifar10", "test"), 4, size=64, seed=1)
    out = distill_on_images(cfg, scenes_teacher(), train.images, test, device="cpu")
    assert len(out["epochs"]) == 4 and out["final_miou"] == out["epochs"][-1]["test_miou"]
    assert out["epochs"][-1]["kd_loss"] < out["epochs"][0]["kd_loss"]  # the student learns the teacher
    floor = untrained_score(cfg, test, dataset_spec("cifar_scenes"), device="cpu")
    assert 0 <= floor["miou"] <= 100 and len(floor["iou"]) == 11


EMBEDDED_MIOU = 35.40  # weights/README.md: the embedded segmentation teacher on the 2,000 test scenes


def test_embedded_segmentation_teacher_metadata():
    teacher = fdk.load_model(fdk.EMBEDDED_SEG_TEACHER)
    assert teacher.arch == "segnet_small" and teacher.input_spec == dataset_spec("cifar_scenes")
    assert round(read_metadata(fdk.EMBEDDED_SEG_TEACHER)["test_miou"], 2) == EMBEDDED_MIOU


@pytest.mark.data
def test_embedded_segmentation_teacher_miou_on_real_scenes(cifar10_root):
    teacher = fdk.load_model(fdk.EMBEDDED_SEG_TEACHER)
    scores = fdk.evaluate_task(teacher, fdk.load_task_split(cifar10_root, "cifar_scenes", "test"), teacher.input_spec)
    assert scores["miou"] == pytest.approx(EMBEDDED_MIOU, abs=0.05)  # the same scenes, the same weights
