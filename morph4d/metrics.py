"""Image metrics shared by every stage (fit evaluation, quality reports, the papers' tables).

Images are float tensors in [0, 1]. ``psnr`` and ``l1`` score a prediction against a target; ``ssim`` is 3DGS's SSIM
(11x11 Gaussian window, sigma 1.5, zero padding, per channel), also the D-SSIM term of the avatar fit's
photometric loss (MVP4D S2.4, GaussianAvatars), so it stays differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # 3DGS / GaussianAvatars SSIM window
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2  # Wang et al. 2004 constants for images in [0, 1]


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of ``pred`` against ``target`` (peak 1), over all values. Clamp a prediction to [0, 1] first to
    score it as it would be shown (the quality report does; the fit scores its raw renders)."""
    return float(-10 * torch.log10((pred - target).square().mean().clamp(min=1e-12)))


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute difference of ``pred`` and ``target`` (IM-Portrait Table 1's L1), over all values."""
    return float((pred - target).abs().mean())


def temporal_l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Temporal consistency of a video ``(F, C, H, W)`` against the target's: the mean absolute difference of
    their frame-to-frame changes, |(p[f+1] - p[f]) - (t[f+1] - t[f])| over pixels and frame pairs. 0 when the
    prediction changes exactly as the target does (a constant offset is not penalised), large for flicker or for
    motion the target does not have. NaN for a single frame."""
    if pred.shape[0] < 2:
        return float("nan")
    return float(((pred[1:] - pred[:-1]) - (target[1:] - target[:-1])).abs().mean())


def check_image_pair(render: torch.Tensor, target: torch.Tensor) -> None:
    """Programming check: two ``(B, C, H, W)`` tensors of one shape."""
    if not isinstance(render, torch.Tensor) or render.dim() != 4 or not isinstance(target, torch.Tensor) \
            or render.shape != target.shape:
        raise ValueError("render and target must be (B, C, H, W) tensors of the same shape, values in [0, 1]")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2D Gaussian window ``(size, size)`` (outer product of a 1D Gaussian, as 3DGS), built
    in ``dtype`` so that its sum is 1 to that precision (a float32 window leaves ~1e-8 of variance on a
    constant float64 image)."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of images ``(B, C, H, W)`` in [0, 1] (3DGS's implementation:
    11x11 Gaussian window, sigma 1.5, zero padding, per channel)."""
    check_image_pair(x, y)
    C = x.shape[1]
    w = gaussian_window(dtype=x.dtype).to(x.device)[None, None].expand(C, 1, -1, -1)  # (C, 1, 11, 11) depthwise
    blur = lambda z: F.conv2d(z, w, padding=SSIM_WINDOW // 2, groups=C)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / \
        ((mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two image batches ``(B, C, H, W)`` in [0, 1]; 1 for identical images."""
    return ssim_map(x, y).mean()


__all__ = ["SSIM_WINDOW", "SSIM_SIGMA", "SSIM_C1", "SSIM_C2", "check_image_pair", "gaussian_window", "l1",
           "temporal_l1", "psnr", "ssim", "ssim_map"]
