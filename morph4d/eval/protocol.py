"""MVP4D's evaluation protocol (S3.1, "Metrics"): what every metric of ``morph4d eval`` is computed on.

* **Crop.** "For all metrics, we center crop images around the projected vertices of the ground truth head
  model." Ours: one square box per view, centred on the tight 2D box of the ground-truth crop vertices
  (``data.synth.crop_vertices``: the head down to 10 cm below the lips) over all frames of that view, side
  ``CROP_SCALE`` x its larger side. One box per view (not per frame) so that a cropped video does not move
  under the temporal metric (JOD); the paper does not say which. Pixels of the box outside the image are
  white (images) / background (mattes).
* **Mask.** "For PSNR, SSIM, LPIPS and JOD, we mask both ground truth and predicted image using the
  background mask detected on the ground truth image." The paper runs a matting model; our ground truth
  carries its matte (synthetic: exact alpha; imported datasets: their masks), and both images are composited
  over white with it. CSIM, AKD, AED and RE see the unmasked crops.

Videos here are ``(V, F, C, H, W)`` float in [0, 1] (one sequence: the batch axis of CONVENTIONS.md dropped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras, head_crop_boxes
from morph4d.data.synth import crop_vertices
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams

CROP_SCALE = 1.1   # ours: the paper crops "around" the vertices without a margin; 10% keeps the chin and crown


def crop_boxes(model: HeadModel, params: HeadParams, cameras: Cameras) -> torch.Tensor:
    """Integer square crop boxes ``(V, 4)`` = (u0, v0, side, side) in pixels, one per view (module doc)."""
    with torch.no_grad():
        verts = model(params)[:, crop_vertices(model)]                                  # (F, n, 3)
    boxes = []
    for v in range(len(cameras)):
        uv = cameras[[v]].project(verts.reshape(-1, 3))[..., :2]                        # (1, F n, 2): all frames
        u0, v0, side, _ = head_crop_boxes(uv, CROP_SCALE)[0].tolist()
        s = max(8, round(side))
        boxes.append([round(u0 + side / 2 - s / 2), round(v0 + side / 2 - s / 2), s, s])
    return torch.tensor(boxes, dtype=torch.int64)


def crop(x: torch.Tensor, box, fill: float) -> torch.Tensor:
    """``x[..., v0:v0+s, u0:u0+s]`` of ``(..., H, W)`` with ``fill`` where the box leaves the image."""
    u0, v0, s, _ = (int(b) for b in box)
    H, W = x.shape[-2:]
    pad = (max(0, -u0), max(0, u0 + s - W), max(0, -v0), max(0, v0 + s - H))
    if any(pad):
        lead = x.shape[:-2]
        x = F.pad(x.reshape(-1, 1, H, W), pad, value=fill).reshape(*lead, H + pad[2] + pad[3], W + pad[0] + pad[1])
        u0, v0 = u0 + pad[0], v0 + pad[2]
    return x[..., v0:v0 + s, u0:u0 + s]


def masked(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x`` composited over white with the ground truth's ``alpha`` (same leading shape, one channel)."""
    return alpha * x.clamp(0, 1) + (1 - alpha)


def check_pair(pred: torch.Tensor, truth: torch.Tensor, what: str = "prediction") -> None:
    """Bad input: the prediction's views / frames / size must be the ground truth's, stated in the error."""
    names = ("views", "frames", "channels", "height", "width")
    if pred.dim() != 5 or truth.dim() != 5:
        raise Morph4DError(f"{what}: expected (views, frames, 3, height, width) videos, got {tuple(pred.shape)} "
                           f"against ground truth {tuple(truth.shape)}")
    for name, a, b in zip(names, pred.shape, truth.shape):
        if a != b:
            raise Morph4DError(f"{what} has {a} {name} but the ground truth has {b}: evaluate outputs made for "
                               f"this ground truth (same views, frames and resolution)")


__all__ = ["CROP_SCALE", "crop_boxes", "crop", "masked", "check_pair"]
