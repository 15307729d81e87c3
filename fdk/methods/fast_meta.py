"""FastDFKD's meta-synthesizer, "meta reuse" (docs/method.md §3.2; the paper's Figure 2c).

Each call: θ' ← θ (a persistent fast copy, overwritten in place: upstream built a new module every
call); k inner steps on (θ', fresh z); then a meta step on θ with Adam at lr_gen·k, whose gradient is
the sum of the k inner gradients (upstream's is_maml=1 branch) or Reptile's scale·(θ − θ'_k).
"""

import copy

import torch

from fdk.distributed import average_across_ranks, broadcast
from fdk.generator import reset_l0
from fdk.methods.generative import GENERATOR_BETAS, GeneratorSynthesizer


class FastMetaSynthesizer(GeneratorSynthesizer):
    def __init__(self, cfg, teacher, inputs):
        super().__init__(cfg, teacher, inputs)
        # The outer optimiser, created once: lr = lr_gen · k (§3.2) unless meta_lr says otherwise.
        meta_lr = self.cfg.meta_lr if self.cfg.meta_lr is not None else self.cfg.lr_gen * self.cfg.synth_steps
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(), lr=meta_lr, betas=GENERATOR_BETAS)
        self.fast_generator = copy.deepcopy(self.generator)  # θ': scratch space, refilled every call

    def run(self, targets, student, snapshot_every, update):
        cfg = self.cfg
        if update and cfg.reset_l0 and self.calls == cfg.reset_l0_call:
            reset_l0(self.generator)  # once, on θ itself; Adam's moments are kept, as upstream (§3.5)
            broadcast(list(self.generator.parameters()))  # torchrun: rank 0's fresh draw on every rank (§14)
        with torch.no_grad():
            for fast, meta in zip(self.fast_generator.state_dict().values(), self.generator.state_dict().values()):
                fast.copy_(meta)  # θ' ← θ, parameters and BN buffers
        params = list(self.generator.parameters())
        meta_grads = [torch.zeros_like(p) for p in params] if update and cfg.meta == "maml" else None
        out = self.invert(self.fast_generator, targets, student, snapshot_every, meta_grads)
        if update:
            self.meta_optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for i, (theta, theta_k) in enumerate(zip(params, self.fast_generator.parameters())):
                    # MAML: the summed inner gradients. Reptile: from θ'_k back to θ, scaled (§3.2).
                    theta.grad = meta_grads[i] if meta_grads is not None else cfg.reptile_scale * (theta - theta_k)
            average_across_ranks([p.grad for p in params])  # torchrun: one θ on every rank (§14)
            self.meta_optimizer.step()
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
