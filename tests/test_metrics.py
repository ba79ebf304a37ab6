"""Image metrics shared by every stage (morph4d/metrics.py); SSIM's own tests are in test_gaussian_losses.py."""

import pytest
import torch

from morph4d.metrics import psnr


def test_psnr_of_a_known_error():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)     # MSE 0.01 -> 20 dB
    assert psnr(x, x) == pytest.approx(120.0)                    # clamped at MSE 1e-12
    # no clamping inside: a prediction out of [0, 1] is scored as it is; the caller clamps to score what is shown
    assert psnr(torch.full((4,), 1.5), torch.ones(4)) == pytest.approx(6.0206, abs=1e-3)
