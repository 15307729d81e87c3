"""The configuration of a distillation run: `DistillConfig` (docs/method.md §4.1, §5).

`fdk/presets.py` names configurations (the paper's tables, smoke runs); `fdk distill --set KEY=VALUE`
overrides any field; `fdk distill --help` lists them all with their help text.
"""

from dataclasses import dataclass

from fdk.augment import AUGMENTATIONS
from fdk.config import option
from fdk.methods import SynthConfig, check_method
from fdk.models import check_architecture
from fdk.utils import FdkError

KD_LOSSES = ("kl", "l1")


@dataclass(frozen=True)
class DistillConfig(SynthConfig):
    """A whole run: the synthesis fields (SynthConfig, what the synthesizer gets) plus these.

    Units (docs/method.md §4.1): the schedule counts epochs; an epoch is ep_steps // kd_steps synthesis
    calls, each followed by kd_steps KD iterations once the warm-up epochs are over.
    """

    # what is distilled
    dataset: str = option("cifar10", "dataset whose statistics the teacher learned (data_stats/<name>.json)")
    teacher: str = option("wrn40_2", "teacher architecture (zoo name)")
    student: str = option("wrn16_1", "student architecture (zoo name)")
    # schedule, in epochs (§4.1)
    epochs: int = option(220, "epochs; each = ep_steps // kd_steps synthesis calls, each followed by kd_steps KD steps")
    warmup: int = option(20, "epochs that synthesise only (no KD)")
    adv_start: int | None = option(
        None, "epoch from which the adversarial term is on; None: warmup - 1 (upstream: one epoch before KD)"
    )
    ep_steps: int = option(400, "KD iterations per epoch; synthesis calls per epoch = ep_steps // kd_steps")
    kd_steps: int = option(400, "KD iterations after each synthesis call")
    # knowledge distillation (§4.3)
    kd_batch_size: int = option(256, "KD batch size, drawn from the synthetic-image bank")
    lr: float = option(0.2, "student SGD learning rate")
    momentum: float = option(0.9, "student SGD momentum")
    weight_decay: float = option(1e-4, "student SGD weight decay")
    T: float = option(20.0, "KD temperature T (the loss is KL at T, times T^2)")
    w_at: float = option(0.0, "ZSKT: weight beta of attention transfer in the student's loss (0: off; §15)")
    kd_loss: str = option("kl", "KD loss: kl (T^2 KL at temperature T, per pixel for segmentation) or l1 (DFAD)")
    cosine_t_max: int = option(200, "cosine schedule length in KD epochs (upstream hard-codes 200)")
    eta_min: float = option(2e-4, "final learning rate of the cosine schedule")
    bank_capacity: int | None = option(None, "keep at most this many synthetic images (None: unbounded, upstream)")
    bank_device_images: int | None = option(None, "bank images kept on the device; more spill (None: all; docs/bank.md)")
    bank_spill: str = option("host", "where images beyond bank_device_images go: host (RAM) or disk (memmap)")
    init_bank: str | None = option(None, "images joined to the bank before epoch 0 (upstream --cmi_init): a run folder")
    kd_augment: str = option("crop_flip", "KD view of bank images: crop_flip (CIFAR) or resized_crop (ImageNet)")
    # engineering
    seed: int = option(0, "random seed")
    compile: bool = option(False, "torch.compile the KD forward passes (minutes of compile time; GPU runs)")
    eval_every: int = option(1, "evaluate on the real test split every n epochs (and after the last)")

    def __post_init__(self):
        super().__post_init__()
        check_method(self.method)
        check_architecture("teacher", self.teacher)
        check_architecture("student", self.student)
        if self.ep_steps < self.kd_steps or self.kd_steps < 1:
            raise FdkError(f"need 1 <= kd_steps <= ep_steps, got kd_steps={self.kd_steps}, ep_steps={self.ep_steps}")
        for name in ("epochs", "kd_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise FdkError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bank_capacity is not None and self.bank_device_images is not None:
            raise FdkError("bank_capacity and bank_device_images cannot be combined; drop old images "
                           "(bank_capacity) or spill them (bank_device_images), not both")  # fmt: skip
        if self.bank_spill not in ("host", "disk"):
            raise FdkError(f"bank_spill={self.bank_spill!r} is not valid; choose one of host, disk")
        if self.kd_augment not in AUGMENTATIONS:
            raise FdkError(f"kd_augment={self.kd_augment!r} is not valid; choose one of {', '.join(AUGMENTATIONS)}")
        if self.kd_loss not in KD_LOSSES:
            raise FdkError(f"kd_loss={self.kd_loss!r} is not valid; choose one of {', '.join(KD_LOSSES)}")
        if self.warmup < 0:
            raise FdkError(f"warmup must be >= 0 epochs, got {self.warmup}")
        self._check_fields_together()

    def _check_fields_together(self) -> None:
        """Settings that are valid alone but cannot work together: each error names both fields."""
        if self.warmup >= self.epochs:
            raise FdkError(f"warmup={self.warmup} with epochs={self.epochs} leaves no epoch to distil in (KD starts "
                           f"after warmup); set warmup below epochs, e.g. --set warmup={max(0, self.epochs - 1)}")
        if self.adv_start is not None and not 0 <= self.adv_start < self.epochs:
            raise FdkError(f"adv_start={self.adv_start} with epochs={self.epochs}: the adversarial term would never "
                           f"be on; choose an epoch from 0 to {self.epochs - 1}, or adv_start=None (warmup - 1)")
        if self.bank_capacity is not None and self.bank_capacity < max(self.synth_batch_size, self.kd_batch_size):
            raise FdkError(f"bank_capacity={self.bank_capacity} is smaller than one batch (synth_batch_size="
                           f"{self.synth_batch_size}, kd_batch_size={self.kd_batch_size}); keep at least "
                           f"{max(self.synth_batch_size, self.kd_batch_size)} images, or None (unbounded)")
        if self.bank_device_images is not None and self.bank_device_images < 0:
            raise FdkError(f"bank_device_images={self.bank_device_images} is negative; 0 or more, or None (all)")
        if self.cosine_t_max < 1:
            raise FdkError(f"cosine_t_max={self.cosine_t_max}: the cosine schedule needs at least 1 KD epoch")
        if self.T <= 0:
            raise FdkError(f"T={self.T}: the KD temperature must be positive (upstream: 20)")

    @property
    def calls_per_epoch(self) -> int:
        return self.ep_steps // self.kd_steps

    @property
    def adversarial_from(self) -> int:
        """The first epoch with the adversarial term (upstream's off-by-one: one epoch before KD)."""
        return self.warmup - 1 if self.adv_start is None else self.adv_start
