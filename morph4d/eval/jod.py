"""JOD: video quality in just-objectionable-difference units (FovVideoVDP, Mantiuk et al. 2021; MVP4D Tables 4,
7, S9 measure temporal consistency with it). 10 = indistinguishable from the reference video; each unit less
means 75% of observers would prefer the reference.

The metric is pyfvvdp 1.2.2's own implementation (its calibrated parameters and display models ship in the
wheel; it runs offline on the CPU, ~30 ms per 256 px frame here). Display: the package's default
``standard_4k`` (MVP4D does not name one; the display sets the pixels per degree, so JOD values are comparable
only at one display and one crop size). Frames are sRGB display-encoded in [0, 1], the masked crops of
``protocol``, played at the ground truth's frame rate.
"""

from __future__ import annotations

import torch

from morph4d.threads import torch_threads

DISPLAY = "standard_4k"


class JOD:
    def __init__(self, display: str = DISPLAY):
        import pyfvvdp
        self.metric = pyfvvdp.fvvdp(display_name=display, heatmap=None, quiet=True, device=torch.device("cpu"))
        self.display = display

    def __call__(self, pred: torch.Tensor, truth: torch.Tensor, fps: float) -> float:
        """JOD of a predicted video ``(F, 3, H, W)`` against the ground truth's, in [0, 1]."""
        with torch.no_grad(), torch_threads(torch.get_num_threads()):
            q, _ = self.metric.predict(pred.float().clamp(0, 1).contiguous(), truth.float().clamp(0, 1).contiguous(),
                                       dim_order="FCHW", frames_per_second=float(fps) if pred.shape[0] > 1 else 0)
        return float(q)


__all__ = ["DISPLAY", "JOD"]
