"""Losses of the 4D Gaussian avatar fit (MVP4D S2.4, Eq. S4-S6, on top of GaussianAvatars and CAP4D).

MVP4D Eq. S6: ``L = L_rgb + L_lap + L_v,deform + L_v,rot + L_scaling + L_position``, with
``lambda_v,rot = 0.005`` and ``lambda_v,deform = 0.4``; everything else follows CAP4D / GaussianAvatars:

* ``L_rgb``: GaussianAvatars' ``0.8 L1 + 0.2 D-SSIM`` (D-SSIM = 1 - SSIM, 3DGS's SSIM) plus CAP4D's LPIPS
  (weight 0.1, ramped in by the fitting loop). LPIPS needs pretrained backbone weights that we cannot
  download; ``lpips_from_path`` loads a user-supplied TorchScript LPIPS. Without one, a multi-scale
  image-gradient L1 (``"edge"``) stands in for it, recorded under that name.
* ``L_position = relu(|mu| - 1) * 0.01`` and ``L_scaling = relu(exp(s) - 0.6) * 1`` (GaussianAvatars;
  CAP4D uses ``relu(|mu| - 2) * 1e-3``: set the ``LossWeights`` fields).
* ``L_lap``: CAP4D's Laplacian smoothness of the UV deformation map, weight 1.
* Back faces (MVP4D S2.4): Gaussians on triangles that never face any camera are culled at
  initialisation (``never_facing``); during training those on triangles facing away from the training
  view are dropped with probability 20% (``backface_dropout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from morph4d.errors import Morph4DError
from morph4d.metrics import check_image_pair, ssim

EDGE_SCALES = 3  # the edge substitute compares gradients at full, 1/2 and 1/4 resolution


@dataclass(frozen=True)
class LossWeights:
    """Every weight and threshold of ``total_loss`` (defaults: GaussianAvatars + MVP4D S2.4).

    l1, dssim: GaussianAvatars' 0.8 / 0.2 split of the photometric loss
    lpips: CAP4D's LPIPS weight (0.1); also the weight of the ``edge`` substitute when no LPIPS is given
    position, position_threshold: GaussianAvatars relu(|mu| - 1) * 0.01 (CAP4D: 1e-3 with threshold 2)
    scale, scale_threshold: GaussianAvatars relu(exp(s) - 0.6) * 1 (CAP4D: threshold 1)
    laplacian: CAP4D's UV-deformation Laplacian, 1
    velocity_rotation, velocity_deform: MVP4D S2.4 lambda_v,rot = 0.005, lambda_v,deform = 0.4
    """

    l1: float = 0.8
    dssim: float = 0.2
    lpips: float = 0.1
    position: float = 0.01
    position_threshold: float = 1.0
    scale: float = 1.0
    scale_threshold: float = 0.6
    laplacian: float = 1.0
    velocity_rotation: float = 0.005
    velocity_deform: float = 0.4


def edge_loss(render: torch.Tensor, target: torch.Tensor, scales: int = EDGE_SCALES) -> torch.Tensor:
    """LPIPS substitute: mean L1 between the horizontal and vertical finite differences of the two
    images at ``scales`` resolutions (each 2x average-pooled from the last), averaged over scales."""
    check_image_pair(render, target)
    total = render.new_zeros(())
    for s in range(scales):
        if s:
            render, target = F.avg_pool2d(render, 2), F.avg_pool2d(target, 2)
        for dim in (-1, -2):
            total = total + (render.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return total / scales


def lpips_from_path(path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Load a user-supplied LPIPS network: a TorchScript file (e.g. ``torch.jit.trace`` of
    ``lpips.LPIPS(net="vgg")``) mapping two ``(B, 3, H, W)`` images in [-1, 1] to distances.

    Nothing is downloaded. Returns ``f(render, target) -> scalar``, taking images in [0, 1].
    Raises ``ValueError`` when ``path`` is not an existing file.
    """
    path = Path(path)
    if not path.is_file():
        raise Morph4DError(f"LPIPS weights not found at {path}: pass a local TorchScript LPIPS file "
                           "(no download is attempted), or leave LPIPS out to use the 'edge' substitute")
    net = torch.jit.load(str(path), map_location="cpu").eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def lpips(render: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_image_pair(render, target)
        return net(render * 2 - 1, target * 2 - 1).mean()
    return lpips


def position_loss(local_means: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """GaussianAvatars: ``mean_i relu(|mu_i| - threshold)``, mu the local offset ``(G, 3)`` in units of k."""
    return F.relu(local_means.norm(dim=-1) - threshold).mean()


def scale_loss(log_scales: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """GaussianAvatars: ``mean_i |relu(exp(s_i) - threshold)|``, s the local log-scales ``(G, 3)``."""
    return F.relu(log_scales.exp() - threshold).norm(dim=-1).mean()


LAPLACIAN_KERNEL = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])  # 5-point stencil


def laplacian_loss(uv_map: torch.Tensor) -> torch.Tensor:
    """CAP4D's smoothness of a UV deformation map ``(F, C, S, S)``: mean squared 5-point discrete
    Laplacian over interior texels (no padding, so any affine map scores exactly 0)."""
    if not isinstance(uv_map, torch.Tensor) or uv_map.dim() != 4:
        raise Morph4DError("uv_map must be a (F, C, S, S) tensor")
    C = uv_map.shape[1]
    k = LAPLACIAN_KERNEL.to(uv_map)[None, None].expand(C, 1, 3, 3)
    return F.conv2d(uv_map, k, groups=C).pow(2).mean()


def velocity_rotation_loss(quats: torch.Tensor) -> torch.Tensor:
    """MVP4D Eq. S4 (unweighted): ``mean_{f,i} |log(R_{i,f}^T R_{i,f+1})|^2``, the squared angle of
    each Gaussian's rotation between consecutive frames.

    quats: ``(F, G, 4)`` world rotations (wxyz, any norm), F >= 2 consecutive frames.
    """
    if not isinstance(quats, torch.Tensor) or quats.dim() != 3 or quats.shape[-1] != 4 or quats.shape[0] < 2:
        raise Morph4DError("quats must be (F >= 2, G, 4) wxyz rotations of consecutive frames")
    q = F.normalize(quats, dim=-1)
    a, b = q[:-1], q[1:]
    # Relative rotation conj(a) * b: w = a.b; xyz = aw b_xyz - bw a_xyz - a_xyz x b_xyz.
    w = (a * b).sum(-1)
    xyz = a[..., :1] * b[..., 1:] - b[..., :1] * a[..., 1:] - torch.linalg.cross(a[..., 1:], b[..., 1:], dim=-1)
    # Angle 2 atan2(|xyz|, |w|) in [0, pi] (|w| picks the short way round); the clamp keeps the
    # gradient finite for identical rotations.
    sin_half = xyz.pow(2).sum(-1).clamp(min=1e-24).sqrt()
    angle = 2 * torch.atan2(sin_half, w.abs())
    return angle.pow(2).mean()


def velocity_deform_loss(deform: torch.Tensor) -> torch.Tensor:
    """MVP4D Eq. S5 (unweighted): ``mean_{t,i} |d_{i,t+1} - d_{i,t}|^2`` for per-Gaussian U-Net
    deformations ``(F, G, 3)`` of F >= 2 consecutive frames."""
    if not isinstance(deform, torch.Tensor) or deform.dim() != 3 or deform.shape[0] < 2:
        raise Morph4DError("deform must be (F >= 2, G, C) deformations of consecutive frames")
    return deform.diff(dim=0).pow(2).sum(-1).mean()


def facing_camera(vertices: torch.Tensor, faces: torch.Tensor, cameras) -> torch.Tensor:
    """``(B, T)`` bool: whether each triangle's front (counter-clockwise, outward normal) faces each camera.

    vertices: ``(N, 3)`` shared by the B cameras or ``(B, N, 3)``; faces ``(T, 3)`` int64;
    cameras: ``morph4d.cameras.Cameras``. Facing means ``n . (C - centroid) > 0``, C the camera centre.
    """
    if not isinstance(vertices, torch.Tensor) or vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise Morph4DError("vertices must be (N, 3) or (B, N, 3)")
    v0, v1, v2 = vertices[..., faces, :].unbind(-2)  # (..., T, 3) each
    normal = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    to_camera = cameras.centers.to(vertices)[:, None, :] - (v0 + v1 + v2) / 3  # (B, T, 3)
    return (normal * to_camera).sum(-1) > 0


def never_facing(vertices_over_frames: torch.Tensor, faces: torch.Tensor, cameras) -> torch.Tensor:
    """``(T,)`` bool: triangles that face none of the cameras in any frame (MVP4D S2.4 culls their Gaussians).

    vertices_over_frames: ``(F, N, 3)`` posed meshes; every camera is tested against every frame.
    """
    if not isinstance(vertices_over_frames, torch.Tensor) or vertices_over_frames.dim() != 3:
        raise Morph4DError("vertices_over_frames must be (F, N, 3)")
    ever = torch.zeros(faces.shape[0], dtype=torch.bool, device=vertices_over_frames.device)
    for verts in vertices_over_frames:
        ever |= facing_camera(verts, faces, cameras).any(dim=0)
    return ~ever


def backface_dropout(bound, facing: torch.Tensor, p: float = 0.2, *, generator: torch.Generator) -> torch.Tensor:
    """Per-Gaussian keep mask ``(G,)`` for one training view (MVP4D S2.4): Gaussians of triangles
    facing the view are always kept; the others are dropped independently with probability ``p``.

    bound: ``BoundGaussians``; facing: ``(T,)`` bool, one row of ``facing_camera``.
    """
    if not 0.0 <= p <= 1.0:
        raise Morph4DError(f"p must be a probability in [0, 1], got {p}")
    if not isinstance(facing, torch.Tensor) or facing.dim() != 1 or facing.dtype != torch.bool:
        raise Morph4DError("facing must be a (T,) bool tensor (one camera's row of facing_camera)")
    u = torch.rand(len(bound), generator=generator, device=generator.device)
    return facing[bound.binding] | (u.to(facing.device) >= p)


def total_loss(render: torch.Tensor, target: torch.Tensor, *, local_means: torch.Tensor,
               log_scales: torch.Tensor, world_quats: torch.Tensor | None = None,
               deform: torch.Tensor | None = None, deform_map: torch.Tensor | None = None,
               weights: LossWeights = LossWeights(),
               lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               lpips_weight: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MVP4D Eq. S6. Returns the scalar loss and the weighted terms by name (they sum to it).

    render, target: ``(B, C, H, W)`` in [0, 1]; local_means, log_scales: the raw ``BoundGaussians``
    tensors (pass the visible / kept subset to restrict the regularisers); world_quats ``(F, G, 4)``
    and deform ``(F, G, 3)`` over F >= 2 consecutive frames enable the velocity terms; deform_map
    ``(F, C, S, S)`` the Laplacian. ``lpips``: from ``lpips_from_path``; without it the term is
    ``"edge"`` (``edge_loss``). ``lpips_weight`` overrides ``weights.lpips`` (CAP4D ramps it in).
    """
    w_lpips = weights.lpips if lpips_weight is None else lpips_weight
    terms = {"l1": weights.l1 * (render - target).abs().mean(),
             "dssim": weights.dssim * (1 - ssim(render, target))}
    if lpips is not None:
        terms["lpips"] = w_lpips * lpips(render, target)
    else:
        terms["edge"] = w_lpips * edge_loss(render, target)
    terms["position"] = weights.position * position_loss(local_means, weights.position_threshold)
    terms["scale"] = weights.scale * scale_loss(log_scales, weights.scale_threshold)
    if deform_map is not None:
        terms["laplacian"] = weights.laplacian * laplacian_loss(deform_map)
    if world_quats is not None:
        terms["velocity_rotation"] = weights.velocity_rotation * velocity_rotation_loss(world_quats)
    if deform is not None:
        terms["velocity_deform"] = weights.velocity_deform * velocity_deform_loss(deform)
    return sum(terms.values()), terms
