"""The BN-statistics loss of DeepInversion, with FastDFKD's momentum mix `bn_mmt` (docs/method.md §2.1, §3.3).

For every BatchNorm l of the teacher, the statistics of its *input* over (N, H, W) are compared with
the layer's running statistics:

    loss_bn = Σ_l ||v̂_l − σ²_l||₂ + ||m̂_l − μ_l||₂          (L2 norms, not squared, summed over layers)

With momentum λ = bn_mmt, once an EMA (m_ema, v_ema) of earlier synthesis batches exists, the current
batch statistics are mixed before the comparison: μ -> (1−λ)μ + λ m_ema (same for σ²), so a batch only
has to correct what the batches before it got wrong, and gradients reach it scaled by (1−λ).
The EMA is updated once per synthesis call from the *last* forward's statistics and never reset.

Hooks exist only inside `with bn_loss.attached():`; upstream left them on during KD (docs/method.md §7).
"""

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn as nn

from fdk.utils import FdkError


class BNStatisticsLoss:
    def __init__(self, teacher: nn.Module, momentum: float = 0.9):
        self.layers = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            raise FdkError("the teacher has no BatchNorm layers; BN-statistics inversion needs them")
        self.momentum = momentum
        n = len(self.layers)
        self.mean_ema: list[torch.Tensor | None] = [None] * n
        self.var_ema: list[torch.Tensor | None] = [None] * n
        self._layer_losses: list[torch.Tensor | None] = [None] * n
        self._last_stats: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n

    @contextmanager
    def attached(self):
        """Register one forward hook per BN layer; always removed on exit, even after an error."""
        handles = [layer.register_forward_hook(partial(self._hook, i)) for i, layer in enumerate(self.layers)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._layer_losses = [None] * len(self.layers)  # free the graph they point into

    def _hook(self, i: int, module: nn.Module, inputs, output) -> None:
        x = inputs[0].float()  # statistics in fp32 even under bf16 autocast
        dims = [0, *range(2, x.ndim)]  # all but channels: (N, H, W) for images
        var, mean = torch.var_mean(x, dim=dims, correction=0)  # one fused pass, biased variance
        self._last_stats[i] = (mean.detach(), var.detach())
        if self.momentum > 0 and self.mean_ema[i] is not None:
            mean = (1 - self.momentum) * mean + self.momentum * self.mean_ema[i]
            var = (1 - self.momentum) * var + self.momentum * self.var_ema[i]
        self._layer_losses[i] = torch.linalg.vector_norm(module.running_var - var) + torch.linalg.vector_norm(
            module.running_mean - mean
        )

    def loss(self) -> torch.Tensor:
        """Σ over layers of the last forward's per-layer loss (call after a teacher forward)."""
        if any(loss is None for loss in self._layer_losses):
            raise RuntimeError("no BN statistics: run the teacher inside `with bn_loss.attached():` first")
        return torch.stack(self._layer_losses).sum()

    def layer_losses(self) -> torch.Tensor:
        """(L,) per-layer losses of the last forward, detached (for plots)."""
        return torch.stack([loss.detach() for loss in self._layer_losses])

    def last_statistics(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(mean, var)] of each BN layer's input in the last forward (for real-vs-synthetic plots)."""
        return list(self._last_stats)

    @torch.no_grad()
    def update_momentum(self) -> None:
        """EMA update from the last forward's batch statistics; once per synthesis call (docs/method.md §3.3)."""
        for i, stats in enumerate(self._last_stats):
            if stats is None:
                continue
            mean, var = stats
            if self.mean_ema[i] is None:
                self.mean_ema[i], self.var_ema[i] = mean.clone(), var.clone()
            else:
                self.mean_ema[i] = self.momentum * self.mean_ema[i] + (1 - self.momentum) * mean
                self.var_ema[i] = self.momentum * self.var_ema[i] + (1 - self.momentum) * var

    def state_dict(self) -> dict:
        return {"mean_ema": list(self.mean_ema), "var_ema": list(self.var_ema)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["mean_ema"]) != len(self.layers):
            raise FdkError(
                f"BN momentum state has {len(state['mean_ema'])} layers, the teacher has {len(self.layers)}: "
                "resume with the same teacher"
            )
        device = self.layers[0].running_mean.device
        self.mean_ema = [None if t is None else t.to(device) for t in state["mean_ema"]]
        self.var_ema = [None if t is None else t.to(device) for t in state["var_ema"]]


@torch.no_grad()
def bn_layer_losses(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(L,) the plain per-layer BN-statistics loss (no momentum) of one eval forward on normalised x."""
    probe = BNStatisticsLoss(teacher, momentum=0.0)
    with probe.attached():
        teacher.eval()(x)
        return probe.layer_losses()


def bn_statistics_loss(teacher: nn.Module, x: torch.Tensor) -> float:
    """The plain BN-statistics loss (no momentum) of one teacher forward on normalised images x."""
    return bn_layer_losses(teacher, x).sum().item()


@torch.no_grad()
def bn_input_statistics(teacher: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(mean, variance)] of every BN layer's input for normalised images x, on the CPU."""
    probe = BNStatisticsLoss(teacher, momentum=0.0)
    with probe.attached():
        teacher.eval()(x)
    return [(m.cpu(), v.cpu()) for m, v in probe.last_statistics()]


def running_statistics(teacher: nn.Module) -> list[dict]:
    """One row per (BN layer, channel): the running mean and variance the teacher stored (§2.1)."""
    layers = BNStatisticsLoss(teacher).layers
    return [
        {"layer": i, "channel": c, "running mean": float(m), "running variance": float(v)}
        for i, layer in enumerate(layers)
        for c, (m, v) in enumerate(zip(layer.running_mean.tolist(), layer.running_var.tolist()))
    ]
