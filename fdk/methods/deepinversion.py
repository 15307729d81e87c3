"""DeepInversion, the DeepInv-2k baseline of the paper's Table 1 (docs/method.md §2; upstream CMI code).

A batch of pixels, drawn from N(0, 1) in the teacher's normalised input space, is optimised directly
with Adam for k steps; every step sees a jittered (rolled by up to 1/8 of the side) and flipped view,
and the pixels are clipped back to the valid range after each update.

Faithful to upstream by default, fdk's alternatives as options (docs/method.md §7):
  deepinv_keep  last: bank the final, clipped pixels (upstream's `best_inputs` aliases the optimised
                tensor, so its "best" is always the last state); best: the lowest-loss pre-update batch.
  deepinv_flip  batch: one coin flips the whole batch (upstream); sample: a coin per image.
  deepinv_adv   js: −JS(S, T) at T=3 plus −0.001·(the student's own BN loss) (upstream); masked_kl:
                FastDFKD's masked KL, so that the two methods differ only in how images are made.
"""

import contextlib

import torch

from fdk.augment import channel_constant, denormalize, quantize, random_hflip, random_hflip_batch, random_roll
from fdk.hooks import BNStatisticsLoss
from fdk.losses import js_divergence
from fdk.methods.base import KeepBest, Synthesized, Synthesizer

PIXEL_BETAS = (0.5, 0.99)  # upstream's Adam betas for pixels
JS_TEMPERATURE = 3.0
STUDENT_BN_WEIGHT = 0.001  # upstream: loss_bn = Σ teacher layers − 0.001 · Σ student layers


class DeepInversionSynthesizer(Synthesizer):
    _student_bn: BNStatisticsLoss | None = None

    def run(self, targets, student, snapshot_every, update):
        cfg, spec = self.cfg, self.inputs
        if targets is not None:
            targets = targets.sort().values  # upstream sorts the sampled classes (for its image grids)
        shape = (cfg.synth_batch_size, len(spec.mean), spec.image_size, spec.image_size)
        pixels = torch.randn(shape, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam([pixels], lr=cfg.lr_gen, betas=PIXEL_BETAS)
        mean, std = channel_constant(spec.mean, pixels), channel_constant(spec.std, pixels)
        low, high = (0 - mean) / std, (1 - mean) / std  # [0, 1] pixels in normalised units
        max_shift = max(1, spec.image_size // 8)
        flip = random_hflip_batch if cfg.deepinv_flip == "batch" else random_hflip
        use_student_bn = student is not None and cfg.deepinv_adv == "js"
        self._student_bn = BNStatisticsLoss(student, momentum=0.0) if use_student_bn else None
        best, losses, snapshots, terms = KeepBest(), [], [], {}
        with self._student_bn.attached() if use_student_bn else contextlib.nullcontext():
            for step in range(cfg.synth_steps):
                x = flip(random_roll(pixels, max_shift))  # jitter and flip, in normalised space
                loss, terms = self.inversion_loss(x, targets, student)
                x01 = denormalize(pixels.detach(), spec.mean, spec.std)
                best.update(x01, loss)
                losses.append(loss.detach())
                self.snapshot(snapshots, snapshot_every, step, x01)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    pixels.copy_(torch.maximum(torch.minimum(pixels, high), low))  # upstream's clip_images
        self._student_bn = None
        kept = denormalize(pixels.detach(), spec.mean, spec.std) if cfg.deepinv_keep == "last" else best.images
        return Synthesized(quantize(kept), targets, torch.stack(losses), terms, snapshots)

    def bn_term(self) -> torch.Tensor:
        loss = self.bn_loss.loss()
        if self._student_bn is not None:  # pushes images away from the student's own statistics
            loss = loss - STUDENT_BN_WEIGHT * self._student_bn.loss()
        return loss

    def adversarial_term(self, s, t):
        if self.cfg.deepinv_adv == "js":
            return -js_divergence(s, t, JS_TEMPERATURE)
        return super().adversarial_term(s, t)
