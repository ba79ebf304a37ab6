"""A user's LPIPS network (Zhang et al. 2018), for metrics (``eval``) and training losses (``portrait.train``).

No package ships LPIPS's backbone offline, so it runs only when the user passes the file, and nothing stands in
under its name: a TorchScript module (``torch.jit.load``, no pickled code), e.g. ``torch.jit.trace(lpips.LPIPS(
net="alex"), (x, x))`` saved on a machine that has the backbone: two ``(B, 3, H, W)`` images in [-1, 1] -> ``B``
distances. Checked on load: 0 for identical images, > 0 for different ones; anything else is refused with why.
"""

from __future__ import annotations

from pathlib import Path

import torch

from morph4d.errors import Morph4DError


def load_torchscript(path, what: str, expected: str) -> torch.jit.ScriptModule:
    """``path`` as a TorchScript module for metric ``what``, or a clear error (missing / not TorchScript)."""
    p = Path(path)
    if not p.is_file():
        raise Morph4DError(f"{what} network not found at {p}: expected {expected} (nothing is downloaded)")
    try:
        net = torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001 - any failure to load means "not a TorchScript file"
        raise Morph4DError(f"{what} network {p} is not a TorchScript file ({type(e).__name__}); expected {expected}")
    return net


def refuse(what: str, path, expected: str, why: str) -> Morph4DError:
    return Morph4DError(f"{what} network {path} is not the expected network ({why}); expected {expected}")


class LPIPS:
    EXPECTED = "a TorchScript LPIPS (two (B, 3, H, W) images in [-1, 1] -> B distances)"

    def __init__(self, path):
        self.net = load_torchscript(path, "LPIPS", self.EXPECTED)
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
        try:
            same, diff = self._run(a, a), self._run(a, b)
        except Exception as e:  # noqa: BLE001 - the file's own code failed on the documented call
            raise refuse("LPIPS", path, self.EXPECTED, f"calling it failed: {type(e).__name__}: {e}")
        if same.shape != (2,) or not (same.abs() < 1e-4).all() or not (diff > 1e-3).all():
            raise refuse("LPIPS", path, self.EXPECTED, f"identical images gave {same.tolist()}, different ones "
                          f"{diff.tolist()}; LPIPS gives 0 and > 0")

    def _run(self, x, y) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x * 2 - 1, y * 2 - 1).reshape(len(x), -1).mean(-1)

    def __call__(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of ``(B, 3, H, W)`` images in [0, 1]."""
        return torch.cat([self._run(pred[i:i + 16], truth[i:i + 16]) for i in range(0, len(pred), 16)])

    def loss(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS of ``(B, 3, H, W)`` images in [0, 1], differentiable in ``pred`` (a training loss)."""
        return self.net(pred * 2 - 1, truth * 2 - 1).mean()


__all__ = ["LPIPS", "load_torchscript", "refuse"]
