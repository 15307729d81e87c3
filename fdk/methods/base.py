"""What every synthesis method shares: its config, the inversion loss, the call count, BN momentum.

A method is a `Synthesizer` subclass in its own file that implements `run()`: make one batch for the
given targets, written out top to bottom (docs/method.md §2-3). The base class wraps each call:

    synthesize(student)  one call of a run: the method's state moves on (its meta step or generator
                         update, the BN-momentum average, the call count)
    sample(student)      the same batch-making from the current state with no side effect at all, for
                         evaluation and inspection (docs/method.md §4.4)
"""

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from fdk.augment import AUGMENTATIONS, quantize
from fdk.config import option
from fdk.generator import GENERATOR_HEADS
from fdk.hooks import BNStatisticsLoss
from fdk.inputs import InputSpec
from fdk.losses import adversarial_loss, one_hot_loss
from fdk.utils import AMP_MODES, FdkError, autocast, rng_restored

BASELINE_METHODS = ("dafl", "zskt", "dfq", "dfad")  # generator_baselines.py: one generator, fresh batches (§15)


@dataclass(frozen=True)
class SynthConfig:
    """The synthesis part of a run's config: all a synthesizer reads (docs/method.md §5 has the values)."""

    method: str = option("fast_meta", "synthesis method: a key of fdk.methods.METHODS")
    synth_batch_size: int = option(256, "images per synthesis call (upstream --batch_size)")
    synth_steps: int = option(10, "inner steps k per synthesis call (the paper's Fast-k; 2000 for DeepInv-2k)")
    lr_gen: float = option(2e-3, "inner Adam lr of the generator (of the pixels for deepinversion)")
    lr_z: float = option(0.01, "inner Adam lr of the latent z")
    meta: str = option("maml", "meta step: maml (sum of inner gradients, upstream is_maml=1) or reptile")
    reptile_scale: float = option(67.0, "Reptile meta-gradient scale, theta.grad = scale * (theta - theta_k)")
    meta_lr: float | None = option(None, "meta Adam lr of the generator; None: lr_gen * k (upstream's CIFAR rule)")
    meta_lr_z: float = option(5e-3, "fast_meta_imagenet: meta Adam lr of the meta-learned latent z (§13)")
    reinit_z: int = option(50, "fast_meta_imagenet: new z and meta-optimiser every n calls (0: never)")
    generator: str = option("auto", "auto (shallow up to 128 px, deep above), shallow or deep (§3.1, §13)")
    gen_head: str = option(
        "sigmoid", "generator baselines' output: sigmoid (upstream), tanh_bn (DAFL's, DFAD's own) or bn (ZSKT's); §15"
    )
    synth_augment: str = option("crop_flip", "synthesis augmentation: crop_flip (CIFAR) or resized_crop (ImageNet)")
    w_bn: float = option(10.0, "weight of loss_bn, the BN-statistics loss")
    w_oh: float = option(0.4, "weight of loss_oh, the one-hot CE to sampled classes")
    w_adv: float = option(1.1, "weight of loss_adv, the adversarial term")
    w_balance: float = option(0.0, "DAFL/DFQ: weight of the class-balance (information entropy) term (§15)")
    w_act: float = option(0.0, "DAFL: weight of the teacher-activation term (§15)")
    cr: float = option(0.8, "CMI: weight of the contrastive term loss_cr (§16)")
    cr_T: float = option(0.2, "CMI: temperature of the contrastive term")
    cmi_memory: int = option(40960, "CMI: feature vectors kept from earlier batches (negatives)")
    cmi_negatives: int = option(4096, "CMI: negatives drawn from that memory per step")
    cmi_head_dim: int = option(256, "CMI: output size of the contrastive projection head")
    cmi_features: str = option("bn", "CMI: features of every BN layer's input (bn) or of the 4 stages' inputs (stages)")
    bn_mmt: float = option(0.9, "BN-statistics momentum lambda (0 = plain DeepInversion)")
    reset_l0: bool = option(True, "fast_meta: re-initialise the generator's first layers once (docs/method.md §3.5)")
    reset_l0_call: int = option(
        140, "fast_meta: the synthesis call (1-based) at which reset_l0 fires (upstream 120 + warmup)"
    )
    nz: int = option(256, "latent size of the generator")
    ngf: int = option(64, "generator width")
    deepinv_keep: str = option("last", "deepinversion banks: last (upstream: the final, clipped pixels) or best")
    deepinv_flip: str = option("batch", "deepinversion flips: batch (upstream: one coin per batch) or sample")
    deepinv_adv: str = option("js", "deepinversion's adversarial term: js (upstream) or masked_kl (FastDFKD's)")
    dense_oh: str = option(
        "self", "segmentation: loss_oh as per-pixel CE to the teacher's own argmax (self) or none (off); §12"
    )
    amp: str = option("off", "mixed precision: off (fp32, as upstream), bf16, auto (bf16 on an accelerator)")
    channels_last: bool = option(True, "channels_last memory format for teacher, student and generator")

    def __post_init__(self):
        checks = {
            "meta": (self.meta, ("maml", "reptile")),
            "deepinv_keep": (self.deepinv_keep, ("last", "best")),
            "deepinv_flip": (self.deepinv_flip, ("batch", "sample")),
            "deepinv_adv": (self.deepinv_adv, ("js", "masked_kl")),
            "dense_oh": (self.dense_oh, ("self", "off")),
            "amp": (self.amp, AMP_MODES),
            "generator": (self.generator, ("auto", "shallow", "deep")),
            "gen_head": (self.gen_head, GENERATOR_HEADS),
            "synth_augment": (self.synth_augment, AUGMENTATIONS),
            "cmi_features": (self.cmi_features, ("bn", "stages")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise FdkError(f"{name}={value!r} is not valid; choose one of {', '.join(allowed)}")
        if self.gen_head != "sigmoid" and self.method not in BASELINE_METHODS:
            raise FdkError(
                f"gen_head={self.gen_head!r} is for the generator baselines ({', '.join(BASELINE_METHODS)}); "
                f"method {self.method!r} needs images in [0, 1]: use gen_head=sigmoid"
            )
        if self.reinit_z < 0:
            raise FdkError(f"reinit_z must be >= 0 calls (0: never), got {self.reinit_z}")
        for name in ("synth_batch_size", "synth_steps", "nz", "ngf"):
            if getattr(self, name) < 1:
                raise FdkError(f"{name} must be at least 1, got {getattr(self, name)}")


def synth_part(cfg: SynthConfig) -> SynthConfig:
    """The SynthConfig inside a larger config (a DistillConfig is one): what a synthesizer gets."""
    return SynthConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SynthConfig)})


@dataclass
class Synthesized:
    images: torch.Tensor  # (B, C, H, W) uint8: the kept batch
    targets: torch.Tensor | None  # (B,) the sampled classes; None for segmentation (no class per image)
    step_losses: torch.Tensor  # (k,) total loss at each inner step, before that step's update
    terms: dict  # loss_bn, loss_oh, loss_adv of the last inner step (detached scalars)
    snapshots: list  # [(step, uint8 images)] when snapshot_every is set


class KeepBest:
    """The lowest-loss batch seen before an update (docs/method.md §3.4), tracked on the device.

    A NaN loss never wins, as in upstream's `loss.item() < best_cost`; the first batch is the fallback.
    """

    def __init__(self):
        self.images: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def update(self, x01: torch.Tensor, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self.images is None:
            self.images = x01.detach()
            self.loss = torch.where(loss.isnan(), torch.full_like(loss, math.inf), loss)
            return
        better = loss < self.loss  # False for NaN
        self.images = torch.where(better, x01.detach(), self.images)
        self.loss = torch.where(better, loss, self.loss)


@contextlib.contextmanager
def frozen_eval(model: nn.Module | None):
    """The student during synthesis: eval mode, no parameter gradients; restored afterwards."""
    if model is None:
        yield
        return
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)


class Synthesizer:
    def __init__(self, cfg: SynthConfig, teacher: nn.Module, inputs: InputSpec):
        self.cfg, self.teacher, self.inputs = synth_part(cfg), teacher, inputs
        teacher.eval().requires_grad_(False)  # frozen: synthesis needs gradients w.r.t. images only
        self.device = next(teacher.parameters()).device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.bn_loss = BNStatisticsLoss(teacher, cfg.bn_mmt)
        self.calls = 0  # upstream `synthesizer.ep`: counts every synthesize() call

    def synthesize(self, student=None, adversarial: bool | None = None, snapshot_every=None) -> Synthesized:
        """One synthesis call. The adversarial term needs the student; by default it is on when one is given."""
        self.calls += 1
        out = self._call(student, adversarial, snapshot_every, update=True)
        if self.cfg.bn_mmt > 0:
            self.bn_loss.update_momentum()  # once per call, from the last forward (docs/method.md §3.3)
        return out

    def sample(self, student=None, adversarial: bool = False, snapshot_every=None, seed=None) -> Synthesized:
        """A batch from the current state that changes nothing: no meta step, no generator update, no
        momentum update, no call counted, and every RNG put back (docs/method.md §4.4). With a seed the
        batch is drawn from it (different seeds, different batches); without one, from the current RNG."""
        with rng_restored(seed):
            return self._call(student, adversarial, snapshot_every, update=False)

    def _call(self, student, adversarial, snapshot_every, update) -> Synthesized:
        if adversarial is None:
            adversarial = student is not None
        if adversarial and student is None:
            raise FdkError("the adversarial term needs a student: pass one, or adversarial=False")
        adversary = student if adversarial and self.cfg.w_adv > 0 else None
        targets = None  # segmentation: no class per image (docs/method.md §12)
        if not self.inputs.dense:
            targets = torch.randint(self.inputs.num_classes, (self.cfg.synth_batch_size,), device=self.device)
        with self.bn_loss.attached(), frozen_eval(student):  # S and T both in eval mode (docs/method.md §2.3)
            return self.run(targets, adversary, snapshot_every, update)

    def run(self, targets, student, snapshot_every, update: bool) -> Synthesized:
        """Make one batch for `targets`; `student` is None when the adversarial term is off. With
        update=False the method must leave its own state (generator, optimisers) untouched."""
        raise NotImplementedError

    def inversion_loss(self, x: torch.Tensor, targets, student) -> tuple[torch.Tensor, dict]:
        """loss = w_bn·loss_bn + w_oh·loss_oh + w_adv·loss_adv for normalised, augmented images x (§2)."""
        cfg = self.cfg
        with autocast(self.device, cfg.amp):
            t = self.teacher(x).float()  # the BN hooks record statistics during this forward
            s = student(x).float() if student is not None else None
        loss_bn = self.bn_term()
        loss_oh = t.new_zeros(())
        if cfg.w_oh and targets is not None:
            loss_oh = one_hot_loss(t, targets)
        elif cfg.w_oh and cfg.dense_oh == "self":  # per pixel: make the teacher surer of what it sees (§12)
            loss_oh = one_hot_loss(t, t.detach().argmax(1))
        loss_adv = self.adversarial_term(s, t) if s is not None else t.new_zeros(())
        loss = cfg.w_bn * loss_bn + cfg.w_oh * loss_oh + cfg.w_adv * loss_adv
        return loss, {"loss_bn": loss_bn.detach(), "loss_oh": loss_oh.detach(), "loss_adv": loss_adv.detach()}

    def bn_term(self) -> torch.Tensor:
        return self.bn_loss.loss()

    def adversarial_term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return adversarial_loss(s, t)  # masked KL, FastDFKD's "decision adversarial" term (§2.3)

    def snapshot(self, snapshots: list, snapshot_every, step: int, x01: torch.Tensor) -> None:
        if snapshot_every and step % snapshot_every == 0:
            snapshots.append((step, quantize(x01)))

    def state_dict(self) -> dict:
        return {"calls": self.calls, "bn_loss": self.bn_loss.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]
        self.bn_loss.load_state_dict(state["bn_loss"])
