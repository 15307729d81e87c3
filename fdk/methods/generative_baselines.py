"""The generator-based baselines of the paper's Table 1: DAFL, ZSKT, DFQ and DFAD (docs/method.md §15).

One generator G(z) is trained for the whole run, adversarially against the student, and the student
learns from fresh G(z) batches at every KD step: no bank, no per-batch inversion. Each synthesis call is
`synth_steps` (upstream: 1) Adam steps on G for a fresh z with

    loss = w_bn·loss_bn + w_oh·CE(t, argmax t) + w_adv·loss_adv + w_balance·Σ p̄ log p̄ + w_act·(−mean |f_T|)

and the methods are weightings of it (their presets), with their own adversarial term:

    DAFL  oh 1, balance 20, act 0.001, nz 512 (no adversarial term)     loss_adv: −KL(T || S) at T = 1
    ZSKT  adv 1 (+ attention transfer in the student's loss, w_at)      loss_adv: −KL(T || S) at T = 1
    DFQ   bn 1, oh 1, adv 1, balance 20                                  loss_adv: −KL(T || S) at T = 1
    DFAD  adv 1; the student learns with the L1 loss on logits          loss_adv: −log(1 + L1(S, T))

Upstream built these with `student=teacher` (its bug #11), which makes every adversarial term zero; fdk
passes the student, as the methods were published. Upstream also gave them its shared Sigmoid generator;
`gen_head` picks instead the output of each method's own published generator (`tanh_bn`: DAFL, DFAD;
`bn`: ZSKT), an affine-free BatchNorm that hands the networks already-normalised images (§15).
"""

import copy

import torch

from fdk.augment import denormalize, normalize, quantize
from fdk.distributed import average_across_ranks
from fdk.generator import Generator
from fdk.losses import activation_loss, balance_loss, dfad_adversarial_loss, kl_adversarial_loss, one_hot_loss
from fdk.methods.base import Synthesized, Synthesizer
from fdk.methods.generative import GENERATOR_BETAS
from fdk.utils import autocast


class GenerativeBaselineSynthesizer(Synthesizer):
    fresh_batches = True  # the KD loop draws its batches from `kd_batch`, not from the bank (§15)

    def __init__(self, cfg, teacher, inputs):
        super().__init__(cfg, teacher, inputs)
        self.generator = Generator(self.cfg.nz, self.cfg.ngf, inputs.image_size, len(inputs.mean), self.cfg.gen_head)
        self.generator.to(self.device, memory_format=self.memory_format).train()
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr_gen, betas=GENERATOR_BETAS)

    def run(self, targets, student, snapshot_every, update):
        cfg = self.cfg
        generator = self.generator if update else copy.deepcopy(self.generator)  # sample(): G's BN stats untouched
        losses, snapshots, terms = [], [], {}
        for step in range(cfg.synth_steps):
            x, x01 = self.images(generator, torch.randn(cfg.synth_batch_size, cfg.nz, device=self.device))
            loss, terms = self.baseline_loss(x, student)
            losses.append(loss.detach())
            self.snapshot(snapshots, snapshot_every, step, x01)
            if update and loss.requires_grad:  # ZSKT/DFAD before the adversarial term is on: nothing to learn
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_across_ranks([p.grad for p in generator.parameters()])  # torchrun: one G everywhere (§14)
                self.optimizer.step()
        return Synthesized(quantize(x01), None, torch.stack(losses), terms, snapshots)

    def images(self, generator, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G(z) as the networks see it (normalised) and as pixels (in [0, 1] for a Sigmoid head)."""
        out, mean, std = generator(z), self.inputs.mean, self.inputs.std
        if self.cfg.gen_head == "sigmoid":
            return normalize(out, mean, std), out
        return out, denormalize(out, mean, std)  # a BatchNorm head: already normalised (§15)

    def baseline_loss(self, x: torch.Tensor, student) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        with autocast(self.device, cfg.amp):
            t, features = self.teacher(x, return_features=True)  # the BN hooks record during this forward
            s = student(x).float() if student is not None else None
        t, features = t.float(), features.float()
        zero = t.new_zeros(())
        terms = {
            "loss_bn": self.bn_term() if cfg.w_bn else zero,
            "loss_oh": one_hot_loss(t, t.detach().argmax(1)) if cfg.w_oh else zero,
            "loss_adv": self.adversarial_term(s, t) if s is not None else zero,
            "loss_balance": balance_loss(t) if cfg.w_balance else zero,
            "loss_act": activation_loss(features) if cfg.w_act else zero,
        }
        weights = {"loss_bn": cfg.w_bn, "loss_oh": cfg.w_oh, "loss_adv": cfg.w_adv, "loss_balance": cfg.w_balance,
                   "loss_act": cfg.w_act}  # fmt: skip
        loss = sum(weights[name] * value for name, value in terms.items())
        return loss, {name: value.detach() for name, value in terms.items()}

    def adversarial_term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dfad_adversarial_loss(s, t) if self.cfg.method == "dfad" else kl_adversarial_loss(s, t)

    @torch.no_grad()
    def kd_batch(self, batch_size: int, mean, std, memory_format=torch.contiguous_format, augment=None) -> torch.Tensor:
        """A fresh batch G(z) for one KD step, normalised (upstream's `sample()`: no augmentation)."""
        x, x01 = self.images(self.generator, torch.randn(batch_size, self.cfg.nz, device=self.device))
        if augment is not None:
            x = normalize(augment(x01), mean, std)
        return x.contiguous(memory_format=memory_format)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
