"""Metrics that need pretrained networks no package ships offline: LPIPS, FID, FVD.

Each runs only when the user passes the network's file; nothing is downloaded and no other network stands
in under its name. Every file is a TorchScript module (``torch.jit.load``, no pickled code) and is checked
on load by what the metric needs from it; a file that is not the expected network is refused with the reason.

* **LPIPS** (Zhang et al. 2018; MVP4D Tables 4/7, IM-Portrait Table 1): ``models.lpips.LPIPS`` (the file's
  convention and checks there; training losses load it the same way).
* **FID** (Heusel et al. 2017; IM-Portrait): the Fréchet distance between Gaussians fitted to Inception-v3
  pool features of the two image sets. The network: StyleGAN2-ADA's TorchScript ``inception-2015-12-05.pt``
  (the TF-Inception port), called as ``net(uint8 images (B, 3, H, W), return_features=True)`` -> (B, 2048).
* **FVD** (Unterthiner et al. 2018; IM-Portrait): the same distance on I3D (Kinetics-400) features of videos.
  The network: the TorchScript ``i3d_torchscript.pt`` of StyleGAN-V / fvd-comparison, called as
  ``net(videos (B, 3, T, 224, 224) in [-1, 1], rescale=False, resize=False, return_features=True)`` ->
  (B, 400); videos are resized to 224 x 224 (bilinear) and scaled to [-1, 1] here, as the TF reference does.

FID and FVD are distribution distances: they compare a whole run against the whole ground truth, so they
are reported per run, not per view or frame, and need many samples to mean much (few here: say so).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from morph4d.errors import Morph4DError
from morph4d.models.lpips import LPIPS, load_torchscript, refuse

FID_DIM, FVD_DIM = 2048, 400


class _Features:
    """A feature network with a fixed output width, checked on a dummy batch at load."""
    what, dim, EXPECTED = "", 0, ""

    def __init__(self, path):
        self.net = load_torchscript(path, self.what, self.EXPECTED)
        try:
            out = self._run(self._dummy())
        except Exception as e:  # noqa: BLE001
            raise refuse(self.what, path, self.EXPECTED, f"calling it failed: {type(e).__name__}: {e}")
        if out.dim() != 2 or out.shape[1] != self.dim:
            raise refuse(self.what, path, self.EXPECTED, f"features of shape {tuple(out.shape)}, not (B, {self.dim})")

    def features(self, x: torch.Tensor, batch: int = 8) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([self._run(x[i:i + batch]) for i in range(0, len(x), batch)]).double().numpy()


class InceptionFeatures(_Features):
    what, dim = "FID", FID_DIM
    EXPECTED = "StyleGAN2-ADA's TorchScript inception-2015-12-05.pt (uint8 images -> 2048 pool features)"

    def _dummy(self):
        return torch.rand(2, 3, 64, 64)

    def _run(self, images):                       # (B, 3, H, W) in [0, 1]
        return self.net((images.clamp(0, 1) * 255).round().to(torch.uint8), return_features=True)


class I3DFeatures(_Features):
    what, dim = "FVD", FVD_DIM
    EXPECTED = "the TorchScript i3d_torchscript.pt of StyleGAN-V (videos in [-1, 1] -> 400 features)"

    def _dummy(self):
        return torch.rand(1, 10, 3, 32, 32)

    def _run(self, videos):                       # (B, T, 3, H, W) in [0, 1]
        B, T = videos.shape[:2]
        x = F.interpolate(videos.reshape(B * T, *videos.shape[2:]).float(), size=(224, 224), mode="bilinear",
                          align_corners=False).reshape(B, T, 3, 224, 224)
        x = (x.clamp(0, 1) * 2 - 1).permute(0, 2, 1, 3, 4).contiguous()
        return self.net(x, rescale=False, resize=False, return_features=True)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017, Eq. 6)."""
    if len(a) < 2 or len(b) < 2:
        raise Morph4DError(f"a Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(sa @ sb)
    if np.iscomplexobj(root):
        root = root.real                   # round-off of a PSD product's square root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * root))


__all__ = ["FID_DIM", "FVD_DIM", "load_torchscript", "LPIPS", "InceptionFeatures", "I3DFeatures",
           "frechet_distance"]
