"""Least-squares alignment of corresponding point sets (Umeyama 1991): the one implementation, for the tracking
benchmark's similarity alignment (``tracking.accuracy``) and the matte sheet's rigid head motion
(``conditioning.projection``)."""

from __future__ import annotations

import torch


def similarity_transform(src: torch.Tensor, dst: torch.Tensor, scale: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s, R, t)`` minimising ``|s src @ R.T + t - dst|^2`` over corresponding points src, dst (N, 3); R a proper
    rotation; ``scale=False``: s = 1 (a rigid motion, Kabsch)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = torch.linalg.svd(b.T @ a / len(src))
    d = torch.ones(3, dtype=src.dtype)
    d[2] = torch.sign(torch.det(U @ Vt))
    R = U @ torch.diag(d) @ Vt
    s = (S * d).sum() / a.pow(2).sum(-1).mean() if scale else torch.ones((), dtype=src.dtype)
    return s, R, md - s * ms @ R.T


__all__ = ["similarity_transform"]
