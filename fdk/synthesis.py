"""Synthesizers: make a batch of images that the teacher's BN statistics and classes say are "data".

One interface, `synthesizer.synthesize(student) -> Synthesized`, four methods (`SYNTHESIZERS`):

- `fast_meta`  FastDFKD (reference doc §1.4, §1.10): a meta-learned generator θ is copied to a fast
               copy θ'; k inner Adam steps on (θ', fresh z); the meta step on θ uses the sum of the k
               inner gradients (upstream "MAML" branch) or Reptile, 67·(θ − θ'_k). Adam(lr_gen·k).
- `fast`       sequential reuse (Fig. 2b): the one generator is optimised directly, k steps per call.
- `no_reuse`   the generator is re-initialised every call (Fig. 2a, CMI without feature reuse).
- `deepinversion`  pixels optimised directly with Adam (the DeepInv-2k baseline of Table 1).

Each call keeps the lowest-loss batch seen *before* an inner update (§1.1) and returns it quantised to
uint8 by floor, as upstream's PNG round trip did (§1.7).
"""

import copy
import dataclasses

import torch
import torch.nn as nn

from fdk.augment import crop_flip, denormalize, normalize, quantize, random_hflip, random_roll
from fdk.generator import DeepGenerator, Generator, reinitialize, reset_l0
from fdk.hooks import BNStatisticsLoss
from fdk.losses import adversarial_loss, one_hot_loss
from fdk.presets import DistillConfig
from fdk.utils import autocast

# Adam betas: generator synthesizers (0.5, 0.999) (§1.4); DeepInversion on pixels (0.5, 0.99) (§2.2).
GENERATOR_BETAS = (0.5, 0.999)
PIXEL_BETAS = (0.5, 0.99)


@dataclasses.dataclass
class Synthesized:
    images: torch.Tensor  # (B, C, H, W) uint8: the kept (lowest-loss) batch
    targets: torch.Tensor  # (B,) the sampled classes
    step_losses: torch.Tensor  # (k,) total loss at each inner step, before that step's update
    terms: dict  # loss_bn, loss_oh, loss_adv of the last inner step (detached scalars)
    snapshots: list  # [(step, uint8 images)] when snapshot_every is set


class Synthesizer:
    """Shared by all methods: the inversion loss, the BN-momentum state and the call counter."""

    def __init__(self, cfg: DistillConfig, teacher: nn.Module, num_classes: int, mean, std, image_size: int):
        self.cfg, self.teacher, self.num_classes = cfg, teacher, num_classes
        teacher.eval().requires_grad_(False)  # frozen: synthesis needs gradients w.r.t. images only
        self.mean, self.std, self.image_size = tuple(mean), tuple(std), image_size
        self.device = next(teacher.parameters()).device
        self.bn_loss = BNStatisticsLoss(teacher, cfg.bn_mmt)
        self.calls = 0  # upstream `synthesizer.ep`: incremented at the start of every call

    def inversion_loss(self, x: torch.Tensor, targets, student, use_adv: bool):
        """loss = w_bn·loss_bn + w_oh·loss_oh + w_adv·loss_adv for normalised, augmented images x."""
        cfg = self.cfg
        with autocast(self.device, cfg.amp):
            t = self.teacher(x).float()  # the BN hooks record statistics during this forward
            s = student(x).float() if use_adv else None
        loss_bn = self.bn_loss.loss()
        loss_oh = one_hot_loss(t, targets) if cfg.w_oh else t.new_zeros(())
        loss_adv = adversarial_loss(s, t) if use_adv else t.new_zeros(())
        loss = cfg.w_bn * loss_bn + cfg.w_oh * loss_oh + cfg.w_adv * loss_adv
        return loss, {"loss_bn": loss_bn.detach(), "loss_oh": loss_oh.detach(), "loss_adv": loss_adv.detach()}

    def synthesize(self, student: nn.Module | None = None, snapshot_every: int | None = None) -> Synthesized:
        """One synthesis call. Without a student the adversarial term is off (pure inversion)."""
        self.calls += 1
        # The adversarial term is on from call `warmup` on, i.e. one epoch before KD starts (§1.9).
        use_adv = student is not None and self.cfg.w_adv > 0 and self.calls >= self.cfg.warmup
        targets = torch.randint(self.num_classes, (self.cfg.synth_batch_size,), device=self.device)
        if student is None:
            with self.bn_loss.attached():
                out = self._synthesize(None, targets, False, snapshot_every)
        else:
            was_training = student.training
            student.eval()  # S and T are both in eval mode during synthesis (§1.11)
            requires = [p.requires_grad for p in student.parameters()]
            student.requires_grad_(False)  # only image gradients are needed; upstream's were discarded anyway
            try:
                with self.bn_loss.attached():
                    out = self._synthesize(student, targets, use_adv, snapshot_every)
            finally:
                for p, r in zip(student.parameters(), requires):
                    p.requires_grad_(r)
                student.train(was_training)
        if self.cfg.bn_mmt > 0:
            self.bn_loss.update_momentum()
        return out

    def _run_inner_steps(self, render, params_for_step, optimizer, targets, student, use_adv, snapshot_every, after):
        """The k inner steps shared by all methods; returns (best images in [0,1], step losses, terms).

        render() -> (x01, x_normalised_augmented); after(step) runs after each optimiser step.
        The best batch is tracked on the device (no host sync per step, unlike upstream's .item()).
        """
        best = best_loss = None
        losses, snapshots = [], []
        terms = {}
        for step in range(self.cfg.synth_steps):
            x01, x = render()
            loss, terms = self.inversion_loss(x, targets, student, use_adv)
            detached = loss.detach()
            if best is None:
                best, best_loss = x01.detach(), detached
            else:
                better = detached < best_loss
                best = torch.where(better, x01.detach(), best)
                best_loss = torch.minimum(best_loss, detached)
            losses.append(detached)
            if snapshot_every and step % snapshot_every == 0:
                snapshots.append((step, quantize(x01)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params_for_step(step)
            optimizer.step()
            after(step)
        return best, torch.stack(losses), terms, snapshots

    def state_dict(self) -> dict:
        return {"calls": self.calls, "bn_loss": self.bn_loss.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]
        self.bn_loss.load_state_dict(state["bn_loss"])


class GeneratorSynthesizer(Synthesizer):
    """fast_meta (reuse='meta'), fast (reuse='sequential') and no_reuse (reuse='none')."""

    def __init__(self, cfg, teacher, num_classes, mean, std, image_size, reuse: str = "meta"):
        super().__init__(cfg, teacher, num_classes, mean, std, image_size)
        self.reuse = reuse
        generator_cls = Generator if image_size <= 128 else DeepGenerator
        self.generator = generator_cls(cfg.nz, cfg.ngf, image_size).to(self.device)
        if cfg.channels_last:
            self.generator.to(memory_format=torch.channels_last)
        self.generator.train()  # always batch statistics (§1.2)
        # Outer optimiser, created once: lr = lr_gen · k for the meta step (§1.4). Unused without meta.
        self.meta_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_gen * cfg.synth_steps, betas=GENERATOR_BETAS
        )
        # A persistent fast copy θ', overwritten in place each call (upstream built a new module: §7 #2).
        self.fast_generator = copy.deepcopy(self.generator) if reuse == "meta" else None
        self.augment = crop_flip

    def _synthesize(self, student, targets, use_adv, snapshot_every) -> Synthesized:
        cfg = self.cfg
        if cfg.reset_l0 and self.reuse == "meta" and self.calls == cfg.reset_l0_at + cfg.warmup:
            reset_l0(self.generator)
        if self.reuse == "none":
            reinitialize(self.generator)
        if self.reuse == "meta":
            with torch.no_grad():
                for fast, meta in zip(self.fast_generator.state_dict().values(), self.generator.state_dict().values()):
                    fast.copy_(meta)
            generator = self.fast_generator
        else:
            generator = self.generator
        z = torch.randn(cfg.synth_batch_size, *generator.latent_shape(), device=self.device, requires_grad=True)
        # A fresh inner optimiser every call: its moments never carry over (§1.11 #7).
        inner = torch.optim.Adam(
            [{"params": generator.parameters()}, {"params": [z], "lr": cfg.lr_z}], lr=cfg.lr_gen, betas=GENERATOR_BETAS
        )
        params = list(generator.parameters())
        meta_grads = [torch.zeros_like(p) for p in params] if self.reuse == "meta" and cfg.meta == "maml" else None

        def accumulate(step):
            if meta_grads is not None:  # FOMAML as upstream: SUM of the inner gradients at θ'_0..θ'_{k-1}
                for g, p in zip(meta_grads, params):
                    g.add_(p.grad)

        def render():
            x01 = generator(z)  # (B, 3, H, W) in [0, 1]
            return x01, normalize(self.augment(x01), self.mean, self.std)

        best, losses, terms, snapshots = self._run_inner_steps(
            render, accumulate, inner, targets, student, use_adv, snapshot_every, lambda step: None
        )
        if self.reuse == "meta":
            self._meta_step(meta_grads)
        return Synthesized(quantize(best), targets, losses, terms, snapshots)

    def _meta_step(self, meta_grads) -> None:
        self.meta_optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for i, (meta, fast) in enumerate(zip(self.generator.parameters(), self.fast_generator.parameters())):
                if meta_grads is not None:
                    meta.grad = meta_grads[i]
                else:  # Reptile: the meta-gradient points from θ'_k back to θ, scaled (§1.4)
                    meta.grad = self.cfg.reptile_scale * (meta - fast)
        self.meta_optimizer.step()

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])


class PixelSynthesizer(Synthesizer):
    """DeepInversion: optimise a batch of pixels from N(0, 1) in normalised space for k steps.

    Upstream's DeepInv (CMI code) uses jitter (a random roll by up to 1/8 of the size) + flip and clips
    the pixels to the valid range after every step. Deviation: its adversarial term is a JS divergence at
    T=3 plus a small student-BN term; fdk uses the same masked KL as FastDFKD so that the two methods
    differ only in how images are parametrised.
    """

    def _synthesize(self, student, targets, use_adv, snapshot_every) -> Synthesized:
        cfg = self.cfg
        shape = (cfg.synth_batch_size, 3, self.image_size, self.image_size)
        pixels = torch.randn(shape, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam([pixels], lr=cfg.lr_gen, betas=PIXEL_BETAS)
        mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        low, high = (0 - mean) / std, (1 - mean) / std
        max_shift = max(1, self.image_size // 8)

        def render():
            return denormalize(pixels, self.mean, self.std), random_hflip(random_roll(pixels, max_shift))

        def clip(step):
            with torch.no_grad():
                pixels.copy_(torch.maximum(torch.minimum(pixels, high), low))

        best, losses, terms, snapshots = self._run_inner_steps(
            render, lambda step: None, optimizer, targets, student, use_adv, snapshot_every, clip
        )
        return Synthesized(quantize(best), targets, losses, terms, snapshots)


SYNTHESIZERS = {
    "fast_meta": lambda *a: GeneratorSynthesizer(*a, reuse="meta"),
    "fast": lambda *a: GeneratorSynthesizer(*a, reuse="sequential"),
    "no_reuse": lambda *a: GeneratorSynthesizer(*a, reuse="none"),
    "deepinversion": PixelSynthesizer,
}


def make_synthesizer(cfg: DistillConfig, teacher: nn.Module, num_classes: int, mean, std, image_size: int = 32):
    """The synthesizer named by cfg.method, on the teacher's device."""
    return SYNTHESIZERS[cfg.method](cfg, teacher, num_classes, mean, std, image_size)
