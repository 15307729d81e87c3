"""CMI, contrastive model inversion (Fang et al., IJCAI 2021), the CMI-500 line of Table 1 (docs/method.md §16).

Like DeepInversion, every batch is inverted from scratch, but through a generator: each call re-initialises
G (N(0, 0.02) weights, BN γ ~ N(1, 0.02)) and a fresh z, then takes k Adam steps on both for

    loss = w_bn·loss_bn + w_oh·CE(t, targets) + w_adv·loss_adv(masked KL) + cr·loss_cr

loss_cr makes each image distinguishable from the others and from earlier batches in the teacher's
feature space: the per-instance spatial means of the inputs of every teacher BN layer (of ResNet-34's
four stages), for a "global" view (crop pad 4 + flip, the view the other terms see) and a "local" one
(RandomResizedCrop 0.25-1 + flip), go through a trained 2-layer projection head; each local projection
must pick its own global one among the batch's and `cmi_negatives` drawn from a memory of the features
of the best batches so far (`cmi_memory`). The lowest-loss batch joins the bank, its features the memory.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from fdk.augment import crop_flip, normalize, quantize, random_resized_crop_flip
from fdk.distributed import average_across_ranks
from fdk.generator import Generator
from fdk.losses import contrastive_loss
from fdk.methods.base import KeepBest, Synthesized, Synthesizer
from fdk.methods.generative import GENERATOR_BETAS


class InstanceMeans:
    """Forward hooks that record the spatial mean of each module's input, per sample: (B, Σ channels)."""

    def __init__(self, modules: list[nn.Module]):
        self.modules, self.means = modules, []

    def __enter__(self):
        self.means = []
        self.handles = [m.register_forward_hook(lambda _m, i, _o: self.means.append(i[0].float().mean((2, 3))))
                        for m in self.modules]  # fmt: skip
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def take(self) -> torch.Tensor:
        """The features of the forwards since the last take, concatenated over layers."""
        out, self.means = torch.cat(self.means, dim=1), []
        return out


class ProjectionHead(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))

    def forward(self, x):
        return F.normalize(self.head(x), dim=1)


class FeatureMemory:
    """A ring buffer of (local, global) feature pairs of earlier best batches; uniform draws of negatives."""

    def __init__(self, size: int, dim: int, device):
        self.data = torch.zeros(size, dim, device=device)
        self.ptr, self.added = 0, 0

    def add(self, features: torch.Tensor) -> None:
        n = len(features)
        index = (self.ptr + torch.arange(n, device=self.data.device)) % len(self.data)
        self.data[index] = features.detach()
        self.ptr, self.added = (self.ptr + n) % len(self.data), self.added + n

    def draw(self, k: int) -> torch.Tensor:
        filled = min(self.added, len(self.data))
        return self.data[torch.randperm(filled, device=self.data.device)[:k]]

    def state_dict(self) -> dict:
        return {"data": self.data[: min(self.added, len(self.data))].clone(), "ptr": self.ptr, "added": self.added}

    def load_state_dict(self, state: dict) -> None:
        self.data.zero_()
        self.data[: len(state["data"])] = state["data"].to(self.data.device)
        self.ptr, self.added = state["ptr"], state["added"]


@torch.no_grad()
def reset_generator(generator: nn.Module) -> None:
    """CMI's re-initialisation of the generator before every call."""
    for m in generator.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ContrastiveSynthesizer(Synthesizer):
    def __init__(self, cfg, teacher, inputs):
        super().__init__(cfg, teacher, inputs)
        cfg, spec = self.cfg, inputs
        self.generator = Generator(cfg.nz, cfg.ngf, spec.image_size, len(spec.mean))
        self.generator.to(self.device, memory_format=self.memory_format).train()
        if cfg.cmi_features == "stages":  # upstream's choice for the ResNet-34 teacher
            layers = [getattr(teacher, f"layer{i}") for i in range(1, 5)]
        else:
            layers = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        self.features = InstanceMeans(layers)
        with torch.no_grad(), self.features:
            teacher(torch.zeros(1, len(spec.mean), spec.image_size, spec.image_size, device=self.device))
            dim = self.features.take().shape[1]
        self.head = ProjectionHead(dim, cfg.cmi_head_dim).to(self.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.lr_gen)
        self.memory = FeatureMemory(cfg.cmi_memory, 2 * dim, self.device)  # (local, global) per image

    def run(self, targets, student, snapshot_every, update):
        cfg, spec = self.cfg, self.inputs
        targets = targets.sort().values  # upstream sorts the sampled classes
        generator = self.generator if update else copy.deepcopy(self.generator)
        reset_generator(generator)
        z = torch.randn(cfg.synth_batch_size, cfg.nz, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam([{"params": generator.parameters()}, {"params": [z]}], cfg.lr_gen,
                                     betas=GENERATOR_BETAS)  # fmt: skip
        best, best_features, losses, snapshots, terms = KeepBest(), KeepBest(), [], [], {}
        for step in range(cfg.synth_steps):
            x01 = generator(z)
            with self.features:
                global_view = normalize(crop_flip(x01), spec.mean, spec.std)
                loss, terms = self.inversion_loss(global_view, targets, student)
                global_f = self.features.take()
                local_view = normalize(random_resized_crop_flip(x01, spec.image_size, (0.25, 1.0)), spec.mean, spec.std)
                self.teacher(local_view)
                local_f = self.features.take()
            if cfg.cr > 0:
                cached_local, cached_global = self.memory.draw(cfg.cmi_negatives).chunk(2, dim=1)
                projected = self.head(torch.cat([local_f, cached_local, global_f, cached_global]))
                local_p, global_p = projected.chunk(2)
                loss_cr = contrastive_loss(local_p, global_p, cfg.synth_batch_size, cfg.cr_T)
                loss = loss + cfg.cr * loss_cr
                terms["loss_cr"] = loss_cr.detach()
            best.update(x01, loss)  # scored before this step's update, as upstream
            best_features.update(torch.cat([local_f, global_f], dim=1), loss)
            losses.append(loss.detach())
            self.snapshot(snapshots, snapshot_every, step, x01)
            optimizer.zero_grad(set_to_none=True)
            self.head_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if update:
                average_across_ranks([p.grad for p in self.head.parameters()])  # torchrun: one head everywhere
                self.head_optimizer.step()
        self.head_optimizer.zero_grad(set_to_none=True)
        if update:
            self.memory.add(best_features.images)
        return Synthesized(quantize(best.images), targets, torch.stack(losses), terms, snapshots)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "head": self.head.state_dict(), "head_optimizer": self.head_optimizer.state_dict(),
                "memory": self.memory.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.memory.load_state_dict(state["memory"])
