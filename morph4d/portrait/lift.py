"""The "2D video + monocular depth" baseline of IM-Portrait's side-view comparison (IM-Portrait §5; issue 18 §7):
one image and one depth map per frame, lifted to a surface and re-rendered from a side camera.

Ours: the baseline's 2D video and depth come from the same network and the same MPI (its frontal render and its
expected depth, the geometry branch's output), so that the comparison isolates the representation: layers that
can hold what the frontal view does not see (MPI) versus a single depth layer. The depth map becomes a mesh (one
vertex per pixel centre, two triangles per 2x2 pixel block whose four pixels are foreground), rasterized into the
side camera with the frontal colours interpolated: the "rubber sheet" of depth-image-based rendering, which
stretches across depth edges and leaves disoccluded background white.
"""

from __future__ import annotations

import torch

from morph4d.cameras import Cameras
from morph4d.mesh.raster import interpolate, rasterize


def lift_depth(rgb: torch.Tensor, depth: torch.Tensor, alpha: torch.Tensor, camera: Cameras,
               targets: Cameras, background: float = 1.0) -> torch.Tensor:
    """``rgb`` (3, H, W), ``depth`` / ``alpha`` (1, H, W) seen by ``camera`` (one) -> (N, 3, H', W') renders in
    ``targets`` (pixels with alpha < 0.5 are not lifted)."""
    H, W = depth.shape[-2:]
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    rays = pix @ torch.linalg.inv(camera.K[0].double()).T                     # z = 1
    cam_pts = rays * depth.reshape(-1, 1).double()
    world = (cam_pts - camera.t[0].double()) @ camera.R[0].double()           # R^T (x - t)
    fg = (alpha.reshape(H, W) >= 0.5) & (depth.reshape(H, W) > 0)
    idx = torch.arange(H * W).reshape(H, W)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    ok = (fg[:-1, :-1] & fg[:-1, 1:] & fg[1:, :-1] & fg[1:, 1:]).reshape(-1)
    faces = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3)[ok], torch.stack([b, c, d], -1).reshape(-1, 3)[ok]])
    out = torch.full((len(targets), 3, targets.height, targets.width), background)
    if len(faces) == 0:
        return out
    raster = rasterize(world.float(), faces, targets)
    colors = interpolate(rgb.reshape(3, -1).T.contiguous().float(), faces, raster)    # (N, H', W', 3)
    return torch.where(raster.mask[:, None], colors.permute(0, 3, 1, 2), out)


__all__ = ["lift_depth"]
