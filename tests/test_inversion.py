"""BN-statistics loss, momentum mix, hooks' lifetime, and the three inversion losses."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fdk.hooks import BNStatisticsLoss
from fdk.losses import adversarial_loss, kd_loss, kl_divergence


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.normal_(0, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        a = self.conv1(x)
        b = self.conv2(F.relu(self.bn1(a)))
        return self.fc(F.relu(self.bn2(b)).mean((2, 3)))


def hand_bn_loss(net, x, mix=None, lam=0.0):
    """Σ_l ||rv − σ²|| + ||rm − μ|| written out with explicit sums over (N, H, W)."""
    a = net.conv1(x)
    b = net.conv2(F.relu(net.bn1(a)))
    total, stats = 0.0, []
    for i, (inp, bn) in enumerate(((a, net.bn1), (b, net.bn2))):
        n = inp.shape[0] * inp.shape[2] * inp.shape[3]
        mu = inp.sum((0, 2, 3)) / n
        var = ((inp - mu.view(1, -1, 1, 1)) ** 2).sum((0, 2, 3)) / n  # biased
        stats.append((mu, var))
        if mix is not None:
            mu = (1 - lam) * mu + lam * mix[i][0]
            var = (1 - lam) * var + lam * mix[i][1]
        total = (
            total + torch.sqrt(((bn.running_var - var) ** 2).sum()) + torch.sqrt(((bn.running_mean - mu) ** 2).sum())
        )
    return total, stats


def test_bn_loss_equals_hand_computation():
    net = TinyNet()
    x = torch.randn(6, 3, 5, 5)
    bn_loss = BNStatisticsLoss(net, momentum=0.9)
    with bn_loss.attached():
        net(x)
        loss = bn_loss.loss()
    expected, _ = hand_bn_loss(net, x)
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert len(bn_loss.layers) == 2


def test_momentum_mix_over_two_calls():
    """§1.3: call 1 compares raw statistics; after update_momentum the EMA holds call 1's statistics;
    call 2 compares (1−λ)·current + λ·EMA; then EMA <- λ·EMA + (1−λ)·call 2's statistics."""
    lam = 0.9
    net = TinyNet()
    bn_loss = BNStatisticsLoss(net, momentum=lam)
    x1, x2 = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5) * 2 + 0.3
    with bn_loss.attached():
        net(x1)
        first = bn_loss.loss()
    expected1, stats1 = hand_bn_loss(net, x1)
    assert torch.allclose(first, expected1, rtol=1e-5)
    bn_loss.update_momentum()
    for ema, (mu, var) in zip(zip(bn_loss.mean_ema, bn_loss.var_ema), stats1):
        assert torch.allclose(ema[0], mu, atol=1e-6) and torch.allclose(ema[1], var, atol=1e-6)

    x2.requires_grad_(True)
    with bn_loss.attached():
        net(x2)
        second = bn_loss.loss()
    stats1 = [(m.detach(), v.detach()) for m, v in stats1]
    expected2, stats2 = hand_bn_loss(net, x2, mix=stats1, lam=lam)
    assert torch.allclose(second, expected2, rtol=1e-5)
    plain, _ = hand_bn_loss(net, x2)
    assert not torch.allclose(second, plain, rtol=1e-3)  # the mix matters
    bn_loss.update_momentum()
    for i, (mu2, var2) in enumerate(stats2):
        assert torch.allclose(bn_loss.mean_ema[i], lam * stats1[i][0] + (1 - lam) * mu2.detach(), atol=1e-6)
        assert torch.allclose(bn_loss.var_ema[i], lam * stats1[i][1] + (1 - lam) * var2.detach(), atol=1e-6)


def test_hooks_are_removed_even_after_an_error():
    net = TinyNet()
    bn_loss = BNStatisticsLoss(net)
    with pytest.raises(ValueError):
        with bn_loss.attached():
            assert all(len(bn._forward_hooks) == 1 for bn in bn_loss.layers)
            raise ValueError("boom")
    assert all(len(bn._forward_hooks) == 0 for bn in bn_loss.layers)
    with pytest.raises(RuntimeError, match="attached"):
        bn_loss.loss()


def test_no_batchnorm_is_a_clear_error():
    from fdk.utils import FdkError

    with pytest.raises(FdkError, match="no BatchNorm"):
        BNStatisticsLoss(nn.Linear(3, 3))


def test_adversarial_mask_semantics():
    """Zero where S and T disagree on the top-1 class; the mean is over the FULL batch."""
    t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    s = torch.tensor([[2.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.5, 0.7], [0.0, 3.0, 0.0]])
    agree = [0, 2]  # rows 1 and 3 disagree
    kl = kl_divergence(s, t)
    expected = -(kl[agree].sum()) / 4
    assert torch.allclose(adversarial_loss(s, t), expected)
    # reference: F.kl_div per sample with a mask, as upstream's loss
    ref = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="none").sum(1)
    assert torch.allclose(kl, ref, atol=1e-6)
    assert adversarial_loss(s[[1, 3]], t[[1, 3]]) == 0


def test_kd_loss_matches_batchmean_kl_times_T_squared():
    s, t = torch.randn(8, 10), torch.randn(8, 10) * 3
    T = 20.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    assert torch.allclose(kd_loss(s, t, T), ref, atol=1e-6)


def test_losses_accept_dense_outputs():
    s, t = torch.randn(2, 13, 4, 4), torch.randn(2, 13, 4, 4)
    per_pixel = kl_divergence(s, t)
    assert per_pixel.shape == (2, 4, 4)
    mask = (s.argmax(1) == t.argmax(1)).float()
    assert torch.allclose(adversarial_loss(s, t), -(per_pixel * mask).mean())
