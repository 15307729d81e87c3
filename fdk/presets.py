"""The run configuration of data-free distillation and the named presets of the paper's CIFAR table.

Every line of Table 1 (docs/method.md §5) is a preset `"{dataset}/{teacher}-{student}/{method}"`,
e.g. `PRESETS["cifar10/wrn40_2-wrn16_2/fast5"]`, with the upstream hyperparameters. `smoke/...` presets
are the same runs shrunk to minutes on a CPU, for tests, demos and notebooks.
Variants: `dataclasses.replace(PRESETS[name], kd_steps=100)` or `fdk distill --set kd_steps=100`.
"""

import dataclasses

from fdk.distill_config import DistillConfig
from fdk.presets_baselines import BASELINES, PUBLISHED_HEADS, baseline_preset, cmi_preset
from fdk.utils import FdkError

# (w_adv, w_oh) per teacher/student pair; the rest is common (scripts/fast_cifar.sh, §5)
PAIRS = {
    ("resnet34", "resnet18"): (1.33, 0.5),
    ("vgg11", "resnet18"): (1.0, 0.5),
    ("wrn40_2", "wrn16_1"): (1.1, 0.4),
    ("wrn40_2", "wrn40_1"): (1.1, 0.4),
    ("wrn40_2", "wrn16_2"): (1.1, 0.4),
}
# Not a paper line: the embedded CIFAR-10 teacher (weights/) with the WRN-16-1 student and the
# wrn40_2 -> wrn16_1 weights; the notebooks' full-size runs use it.
EMBEDDED_PAIR = ("resnet20", "wrn16_1")
# k -> (lr_gen, lr_z); the meta lr is lr_gen * k (§5)
FAST_K = {2: (5e-3, 0.015), 5: (3e-3, 0.01), 10: (2e-3, 0.01)}
# upstream resets at `ep == 120 + warmup`, ep counting synthesis calls from 1 (§3.5)
RESET_L0_AFTER_WARMUP = 120


def fast_preset(dataset: str, teacher: str, student: str, k: int) -> DistillConfig:
    w_adv, w_oh = {**PAIRS, EMBEDDED_PAIR: PAIRS[("wrn40_2", "wrn16_1")]}[(teacher, student)]
    lr_gen, lr_z = FAST_K[k]
    warmup = 20
    return DistillConfig(
        dataset=dataset,
        teacher=teacher,
        student=student,
        warmup=warmup,
        synth_steps=k,
        lr_gen=lr_gen,
        lr_z=lr_z,
        w_adv=w_adv,
        w_oh=w_oh,
        reset_l0_call=RESET_L0_AFTER_WARMUP + warmup,
    )


def deepinversion_preset(dataset: str, teacher: str, student: str) -> DistillConfig:
    """DeepInv-2k (scripts/deepinv_cifar.sh, §5): Adam on pixels, lr 0.1, bn 10, oh 1, adv 1, student lr
    0.1, 200 KD epochs, no warm-up and no BN momentum. 2,000 steps per batch is the paper's label
    ("DeepInv-2k"); upstream's script runs 1,000 (`--g_steps 1000`): `--set synth_steps=1000` for that."""
    return DistillConfig(
        dataset=dataset,
        teacher=teacher,
        student=student,
        method="deepinversion",
        epochs=200,
        warmup=0,
        synth_steps=2000,
        lr_gen=0.1,
        w_bn=10.0,
        w_oh=1.0,
        w_adv=1.0,
        bn_mmt=0.0,
        reset_l0=False,
        lr=0.1,
    )


def segmentation_preset(dataset: str, teacher: str, student: str, k: int, **changes) -> DistillConfig:
    """Dense FastDFKD (docs/method.md §12). Upstream has no segmentation script; these follow DFAD's
    NYUv2 protocol where it has one (student SGD lr 0.1, wd 5e-5, batch 64, 50 x 5 student steps per
    epoch, 300 KD epochs) and FastDFKD's CIFAR loop and Fast-k settings for the rest. The loss weights and
    the per-pixel KL at T = 1 are fdk's choices, not upstream's."""
    lr_gen, lr_z = FAST_K[k]
    warmup = 20
    base = dict(dataset=dataset, teacher=teacher, student=student, epochs=warmup + 300, warmup=warmup,
                ep_steps=250, kd_steps=250, synth_batch_size=64, kd_batch_size=64, synth_steps=k, lr_gen=lr_gen,
                lr_z=lr_z, w_bn=10.0, w_oh=0.5, w_adv=1.0, dense_oh="self", reset_l0_call=RESET_L0_AFTER_WARMUP + warmup,
                lr=0.1, weight_decay=5e-5, T=1.0, cosine_t_max=300)  # fmt: skip
    return DistillConfig(**{**base, **changes})


# ImageNet (docs/method.md §13; the final runs' logs, reference §2.3): student -> (zoo name, w_adv)
IMAGENET_STUDENTS = {"resnet50": ("resnet50_imagenet", 0.1), "resnet18": ("resnet18_imagenet", 1.0),
                     "mobilenetv2": ("mobilenetv2_imagenet", 0.1)}  # fmt: skip


def imagenet_preset(student: str, k: int = 50) -> DistillConfig:
    """Fast-50 on ImageNet from torchvision's ResNet-50: 400 epochs of 10 synthesis calls (batch 100, k=50)
    each followed by 100 KD steps (batch 100); Reptile on the generator and the latent, unscaled, meta lr
    1e-4 / 5e-3; z re-drawn every 50 calls; adversarial term from the start; RandomResizedCrop views."""
    arch, w_adv = IMAGENET_STUDENTS[student]
    return DistillConfig(
        dataset="imagenet", teacher="resnet50_imagenet", student=arch, method="fast_meta_imagenet",
        epochs=400, warmup=0, adv_start=0, ep_steps=1000, kd_steps=100, synth_batch_size=100, kd_batch_size=100,
        synth_steps=k, lr_gen=2e-4, lr_z=0.01, meta="reptile", reptile_scale=1.0, meta_lr=1e-4, meta_lr_z=5e-3,
        reinit_z=50, w_bn=0.1, w_oh=0.1, w_adv=w_adv, bn_mmt=0.9, reset_l0=False, generator="deep",
        synth_augment="resized_crop", kd_augment="resized_crop", lr=0.1, T=5.0, cosine_t_max=400, eta_min=0.0,
    )  # fmt: skip


def smoke(cfg: DistillConfig, **changes) -> DistillConfig:
    """The same run shrunk to about three minutes on a 2-core CPU (tests, `fdk demo`, the notebooks).

    Sized by measurement on the embedded teacher (benchmarks/README.md): at equal time, more synthesis
    calls help a short run more than more KD steps per call, and k=5 learns far more than k=2.
    """
    small = dict(
        epochs=20,
        warmup=2,
        ep_steps=40,
        kd_steps=40,
        synth_batch_size=96,
        kd_batch_size=96,
        synth_steps=min(cfg.synth_steps, 5),
        ngf=32,
        cosine_t_max=18,
        reset_l0_call=5,  # the 5th call: early resets help short runs (44.8% vs 36.2% without, 30-epoch smoke)
        eval_every=5,
    )
    return dataclasses.replace(cfg, **{**small, **changes})


def _build() -> dict[str, DistillConfig]:
    presets = {}
    for dataset in ("cifar10", "cifar100"):
        for teacher, student in PAIRS:
            base = f"{dataset}/{teacher}-{student}"
            for k in FAST_K:
                presets[f"{base}/fast{k}"] = fast_preset(dataset, teacher, student, k)
            presets[f"{base}/deepinv2k"] = deepinversion_preset(dataset, teacher, student)
            for method in BASELINES:
                presets[f"{base}/{method}"] = baseline_preset(method, dataset, teacher, student)
            presets[f"{base}/cmi500"] = cmi_preset(dataset, teacher, student)
        presets[f"{dataset}/wrn40_2-wrn16_1/cmi5"] = cmi_preset(dataset, "wrn40_2", "wrn16_1", k=5, cr=0.0)  # "fast"
    teacher, student = EMBEDDED_PAIR
    for k in FAST_K:
        presets[f"cifar10/{teacher}-{student}/fast{k}"] = fast_preset("cifar10", teacher, student, k)
    presets[f"cifar10/{teacher}-{student}/deepinv2k"] = deepinversion_preset("cifar10", teacher, student)
    # Smoke runs: the embedded pair, shrunk.
    fast = fast_preset("cifar10", teacher, student, 5)
    presets["smoke/fast_meta"] = smoke(fast)
    presets["smoke/fast"] = smoke(fast, method="fast", reset_l0=False)
    presets["smoke/no_reuse"] = smoke(fast, method="no_reuse", reset_l0=False)
    # DeepInversion needs many steps per batch, which is the point: 20 here (2000 in the paper), 10 epochs.
    presets["smoke/deepinversion"] = smoke(
        deepinversion_preset("cifar10", teacher, student),
        synth_steps=20,
        synth_batch_size=64,
        epochs=10,
        warmup=1,
        cosine_t_max=9,
        eval_every=3,
    )
    # ImageNet (§13): the paper's three students, and a CPU-sized run of the same loop at 224 px.
    for student in IMAGENET_STUDENTS:
        presets[f"imagenet/resnet50-{student}/fast50"] = imagenet_preset(student)
    presets["smoke/imagenet"] = dataclasses.replace(
        imagenet_preset("resnet18", k=2), epochs=2, ep_steps=4, kd_steps=2, synth_batch_size=4, kd_batch_size=8,
        reinit_z=3, ngf=16, cosine_t_max=2, eval_every=1,
    )  # fmt: skip
    # The generator baselines on the embedded pair: 10 epochs, one generator step and 5 KD steps per call.
    # DAFL, ZSKT and DFAD use the output of their own published generators (gen_head, docs/method.md §15).
    # Sized by measurement (tests/test_methods_learn.py; 2026-11-26, this CPU, every 5th test image, 10.00%
    # untrained), 800 KD steps at batch 64 and ngf 32: DAFL 20.15% in 161 s (16 calls per epoch); DFQ 20.45% in
    # 194 s (8 calls of 3 generator steps and its own 10 KD steps). ZSKT and DFAD do not learn at any smoke
    # size measured (benchmarks/README.md); at Table 1's schedule on a GPU they do (runbook J8, §15).
    for method in BASELINES:
        cfg = baseline_preset(method, "cifar10", *EMBEDDED_PAIR)
        presets[f"smoke/{method}"] = dataclasses.replace(
            cfg, epochs=10, ep_steps=40, synth_batch_size=96, kd_batch_size=96, cosine_t_max=10, eval_every=5,
            gen_head=PUBLISHED_HEADS[method],
        )  # fmt: skip
    presets["smoke/dafl"] = dataclasses.replace(
        presets["smoke/dafl"], ep_steps=80, synth_batch_size=64, kd_batch_size=64, ngf=32
    )
    presets["smoke/dfq"] = dataclasses.replace(
        presets["smoke/dfq"], ep_steps=80, synth_steps=3, synth_batch_size=64, kd_batch_size=64, ngf=32
    )
    presets["smoke/cmi"] = smoke(cmi_preset("cifar10", *EMBEDDED_PAIR, k=20), synth_batch_size=64, epochs=10, warmup=1,
                                 cosine_t_max=9, eval_every=3, cmi_memory=4096, cmi_negatives=512)  # fmt: skip
    # Segmentation (§12): the paper's NYUv2 pair, and fdk's offline CIFAR-scenes pair (a CPU-sized run).
    for k in FAST_K:
        presets[f"nyuv2/deeplabv3_resnet50-deeplabv3_mobilenet/fast{k}"] = segmentation_preset(
            "nyuv2", "deeplabv3_resnet50", "deeplabv3_mobilenet", k
        )
    scenes = segmentation_preset("cifar_scenes", "segnet_small", "segnet_tiny", 5, ngf=32)
    presets["cifar_scenes/segnet_small-segnet_tiny/fast5"] = dataclasses.replace(
        scenes, epochs=45, warmup=5, ep_steps=60, kd_steps=60, cosine_t_max=40, reset_l0_call=10, eval_every=5
    )
    # Sized by measurement (2026-11-25, this CPU, every 5th test scene): final test mIoU 10.35% (dense_oh=self)
    # vs 8.43% (off), 9.58% at T=4, 9.85% with w_oh 1 / w_adv 0.5, 7.50% with ngf 64; about 80 s.
    presets["smoke/segmentation"] = dataclasses.replace(
        scenes, epochs=16, warmup=2, ep_steps=50, kd_steps=50, synth_batch_size=32, kd_batch_size=32,
        cosine_t_max=14, reset_l0_call=5, eval_every=3,
    )  # fmt: skip
    return presets


PRESETS = _build()


def get_preset(name: str) -> DistillConfig:
    if name not in PRESETS:
        close = [p for p in PRESETS if name.split("/")[-1] in p][:5]
        raise FdkError(f"unknown preset {name!r}; e.g. {', '.join(close or list(PRESETS)[:5])} (fdk presets lists all)")
    return PRESETS[name]
