"""FastDFKD at ImageNet scale: the generator AND its latent are meta-learned (docs/method.md §13).

Upstream's FastMetaSynthesizerForImageNet, with what differs from the CIFAR meta-synthesizer (fast_meta.py):

- the latent z (B, nz, H/16, W/16) persists across calls and is meta-learned with θ; the inner loop
  starts from it and optimises a copy;
- the meta step is Reptile on both, with no scale: θ.grad = θ − θ'_k and z.grad = z − z_k, and the meta
  learning rates (meta_lr for θ, meta_lr_z for z) are not multiplied by k;
- every `reinit_z` calls (50), z is drawn afresh and the meta-optimiser re-created (θ is kept);
- the batch kept is the last forward's, not the lowest-loss one; augmentation is RandomResizedCrop
  (scale 0.75-1) + flip, set by the config (`synth_augment=resized_crop`).

Under torchrun each rank has its own z and its own batches; the meta-gradient of θ is averaged across
ranks (§14), that of z is not.
"""

import copy

import torch

from fdk.distributed import average_across_ranks
from fdk.methods.generative import GENERATOR_BETAS, GeneratorSynthesizer
from fdk.utils import FdkError


class FastMetaImageNetSynthesizer(GeneratorSynthesizer):
    def __init__(self, cfg, teacher, inputs):
        if cfg.meta != "reptile":
            raise FdkError("fast_meta_imagenet meta-learns with Reptile only (upstream's first-order MAML branch "
                           "there is broken, docs/method.md §13); --set meta=reptile")  # fmt: skip
        super().__init__(cfg, teacher, inputs)
        self.fast_generator = copy.deepcopy(self.generator)  # θ': scratch space, refilled every call
        self.new_latent()

    def new_latent(self) -> None:
        """A fresh meta-learned latent and a fresh meta-optimiser over (θ, z) (upstream's `reinit`)."""
        cfg = self.cfg
        shape = (cfg.synth_batch_size, *self.generator.latent_shape())
        self.z = torch.randn(shape, device=self.device, requires_grad=True)
        meta_lr = cfg.meta_lr if cfg.meta_lr is not None else cfg.lr_gen * cfg.synth_steps
        self.meta_optimizer = torch.optim.Adam(
            [{"params": self.generator.parameters()}, {"params": [self.z], "lr": cfg.meta_lr_z}],
            lr=meta_lr,
            betas=GENERATOR_BETAS,
        )

    def run(self, targets, student, snapshot_every, update):
        cfg = self.cfg
        if update and cfg.reinit_z and self.calls % cfg.reinit_z == 0:
            self.new_latent()  # calls 50, 100, ... start from a new latent, as upstream
        with torch.no_grad():
            for fast, meta in zip(self.fast_generator.state_dict().values(), self.generator.state_dict().values()):
                fast.copy_(meta)  # θ' ← θ, parameters and BN buffers
        z = self.z.detach().clone().requires_grad_(True)  # z' ← z; the inner Adam moves z' in place
        out = self.invert(self.fast_generator, targets, student, snapshot_every, z=z, keep="last")
        if update:
            self.meta_optimizer.zero_grad(set_to_none=True)
            params = list(self.generator.parameters())
            with torch.no_grad():
                for theta, theta_k in zip(params, self.fast_generator.parameters()):
                    theta.grad = theta - theta_k  # Reptile, unscaled (§13)
                self.z.grad = self.z - z.detach()
            average_across_ranks([p.grad for p in params])  # one θ on every rank; z stays per rank (§14)
            self.meta_optimizer.step()
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "z": self.z.detach().clone(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.new_latent()  # rebuild z and the optimiser over it, then fill both from the checkpoint
        with torch.no_grad():
            self.z.copy_(state["z"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
