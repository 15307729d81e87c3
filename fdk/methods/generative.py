"""Synthesis through a generator G(z; θ) (docs/method.md §3.1): the k inner steps, written out once.

The three reuse strategies of the paper's Figure 2 (fast_meta.py, fast.py, no_reuse.py) differ only in
which generator the k steps optimise and what happens before and after them; the steps are here.
"""

import torch

from fdk.augment import make_augment, normalize, quantize
from fdk.generator import DeepGenerator, Generator
from fdk.methods.base import KeepBest, Synthesized, Synthesizer

GENERATOR_BETAS = (0.5, 0.999)  # Adam betas of every generator optimiser, inner and meta (§3.2)


class GeneratorSynthesizer(Synthesizer):
    def __init__(self, cfg, teacher, inputs):
        super().__init__(cfg, teacher, inputs)
        deep = self.cfg.generator == "deep" or (self.cfg.generator == "auto" and inputs.image_size > 128)
        generator_cls = DeepGenerator if deep else Generator
        self.generator = generator_cls(self.cfg.nz, self.cfg.ngf, inputs.image_size, len(inputs.mean))
        self.generator.to(self.device, memory_format=self.memory_format)
        self.generator.train()  # always batch statistics (§3.1)
        # The teacher's training view of the images (§2.4); ImageNet: RandomResizedCrop(scale 0.75-1) + flip (§13).
        self.augment = make_augment(self.cfg.synth_augment, inputs.image_size, scale=(0.75, 1.0))

    def invert(self, generator, targets, student, snapshot_every, meta_grads=None, z=None, keep="best") -> Synthesized:
        """k inner Adam steps on (generator, latent z); keeps the lowest-loss batch (§3.4) or the last one.

        meta_grads: buffers that receive the sum of the inner gradients (fast_meta's MAML step).
        z: the starting latent, a leaf that requires grad, updated in place (fast_meta_imagenet's learned
        latent); None: a fresh N(0, 1) draw. keep: "best" (CIFAR) or "last" (the final forward, ImageNet §13).
        """
        cfg = self.cfg
        if z is None:
            z = torch.randn(cfg.synth_batch_size, *generator.latent_shape(), device=self.device, requires_grad=True)
        # A fresh inner optimiser every call: its moments never carry over (§3.2).
        inner = torch.optim.Adam(
            [{"params": generator.parameters()}, {"params": [z], "lr": cfg.lr_z}], lr=cfg.lr_gen, betas=GENERATOR_BETAS
        )
        best, losses, snapshots, terms = KeepBest(), [], [], {}
        for step in range(cfg.synth_steps):
            x01 = generator(z)  # (B, 3, H, W) in [0, 1]
            x = normalize(self.augment(x01), self.inputs.mean, self.inputs.std)
            loss, terms = self.inversion_loss(x, targets, student)
            if keep == "best" or step == cfg.synth_steps - 1:
                best.update(x01, loss)  # scored before this step's update, as upstream
            losses.append(loss.detach())
            self.snapshot(snapshots, snapshot_every, step, x01)
            inner.zero_grad(set_to_none=True)
            loss.backward()
            if meta_grads is not None:  # first-order MAML as upstream: the SUM of ∇θ' at θ'_0 ... θ'_{k-1}
                for g, p in zip(meta_grads, generator.parameters()):
                    g.add_(p.grad)
            inner.step()
        return Synthesized(quantize(best.images), targets, torch.stack(losses), terms, snapshots)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
