"""Multiplane images (MPIs): IM-Portrait's scene representation (supplement "Rendering Details", after Zhou et al.
2018's stereo magnification), rendered into any camera near the MPI's frontal camera.

An MPI is ``P`` fronto-parallel planes of the frontal camera, each an RGBA image of the camera's size:

* **Depths.** The supplement places the near plane at ``r - 0.15`` and the far plane at ``r + 0.05`` (metres),
  ``r`` = the distance from the frontal camera to the head joint of the head model. Ours: ``r`` is the joint's
  depth along the optical axis (the planes are fronto-parallel, and the frontal camera looks at the head, so the
  two agree to within the cosine of a few degrees); the ``P`` planes are spaced uniformly in disparity (1 /
  depth) between near and far, the usual choice the paper leaves open (REFERENCE.md §2). Index 0 is the nearest.
* **Colours.** The colour branch predicts a *frontal* image ``F`` and a *residual* image ``R``; the geometry
  branch predicts every plane's alpha (supplement, network description). Plane ``i``'s colour is ours:
  ``c_i = T_i F + (1 - T_i) R`` with ``T_i = prod_{j < i} (1 - alpha_j)`` the frontal camera's transmittance
  in front of plane ``i``: what the frontal camera sees takes the frontal image, what it cannot see (the
  content a side view uncovers) takes the residual. No extra blend weights are predicted (Tucker & Snavely 2020
  predict them). Where the first surface the frontal camera meets is opaque, its frontal render is exactly
  ``F``; translucent layers mix in ``R`` by how much they hide, which the rendering losses train through.
* **Rendering** into a camera (IM-Portrait §3, supplement): each plane is warped by the homography the plane
  induces between the frontal and the target camera, then the planes are over-composited front to back:
  ``rgb = sum_i w_i c_i`` with ``w_i = alpha_i prod_{j < i} (1 - alpha_j)``; the opacity is ``sum_i w_i``.
  The expected depth (and disparity) come from the same weights: ``depth = sum_i w_i z_i / sum_i w_i`` with
  ``z_i`` the plane's depth along each target pixel's ray.

Two implementations with one contract: ``render_mpi`` in torch (differentiable, the reference; training uses
it), and a fused numba kernel (``_render_kernel``: warp + composite per pixel with early termination at
T < 1e-4, no gradient) that ``render_mpi`` picks when no gradient is needed (``fast=None``);
tests/test_portrait_mpi.py checks that both agree. Cameras follow CONVENTIONS.md (OpenCV world-to-camera,
pixel intrinsics with pixel centres at +0.5); images float in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError

NEAR_OFFSET = -0.15   # metres from r (supplement, "Rendering Details")
FAR_OFFSET = 0.05
BACKGROUND_BEHIND = 0.5  # metres behind the far plane: the static background's plane (``with_background``, ours)
PLANES = 32           # ours: the renderer's benchmark size; the network's configs choose their own count
STOP_T = 1e-4         # the fast path stops a pixel's front-to-back walk below this transmittance


def plane_depths(r: float, planes: int = PLANES) -> torch.Tensor:
    """Depths (P,) in metres, nearest first, uniform in disparity from ``r + NEAR_OFFSET`` to ``r + FAR_OFFSET``."""
    near, far = r + NEAR_OFFSET, r + FAR_OFFSET
    if planes < 2 or near <= 0:
        raise Morph4DError(f"an MPI needs >= 2 planes in front of the camera: {planes} planes, near plane at "
                           f"{near:.3f} m (r = {r:.3f} m; the head joint must be more than 0.15 m away)")
    return 1.0 / torch.linspace(1.0 / near, 1.0 / far, planes, dtype=torch.float64)


def head_distance(camera: Cameras, joint: torch.Tensor) -> float:
    """``r``: the depth of the head joint (3,) (world) in the frontal camera (module doc)."""
    return float((camera.R[0] @ joint.to(camera.R) + camera.t[0])[2])


def transmittance(alpha: torch.Tensor) -> torch.Tensor:
    """``T_i = prod_{j < i} (1 - alpha_j)`` of alphas (..., P, 1, H, W), nearest plane first."""
    ones = torch.ones_like(alpha[..., :1, :, :, :])
    return torch.cumprod(torch.cat([ones, 1 - alpha[..., :-1, :, :, :]], -4), -4)


def plane_colors(front: torch.Tensor, residual: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-plane colours (..., P, 3, H, W) from the frontal and residual images (..., 3, H, W) (module doc)."""
    T = transmittance(alpha)
    return T * front.unsqueeze(-4) + (1 - T) * residual.unsqueeze(-4)


@dataclass
class MPI:
    """One MPI: ``color`` (P, 3, H, W), ``alpha`` (P, 1, H, W), ``depths`` (P,) nearest first, in ``camera``
    (one camera of size W x H, the frontal camera)."""
    color: torch.Tensor
    alpha: torch.Tensor
    depths: torch.Tensor
    camera: Cameras

    def __post_init__(self):
        P = self.depths.shape[0]
        H, W = self.camera.height, self.camera.width
        if len(self.camera) != 1:
            raise Morph4DError(f"an MPI has one frontal camera, got {len(self.camera)}")
        if tuple(self.color.shape) != (P, 3, H, W) or tuple(self.alpha.shape) != (P, 1, H, W):
            raise Morph4DError(f"MPI of {P} planes in a {W}x{H} camera expects color (P, 3, H, W) = {(P, 3, H, W)} "
                               f"and alpha {(P, 1, H, W)}, got {tuple(self.color.shape)} and "
                               f"{tuple(self.alpha.shape)}")
        if not bool((self.depths[1:] > self.depths[:-1]).all()) or not bool(self.depths[0] > 0):
            raise Morph4DError("MPI depths must be positive and increasing (nearest plane first)")


@dataclass
class Rendered:
    """An MPI rendered into N cameras: rgb (N, 3, H, W) over ``background``, alpha / depth / disparity
    (N, 1, H, W); depth and disparity are expected values over the opaque part (0 where nothing is)."""
    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    disparity: torch.Tensor


def relative_pose(src: Cameras, dst: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, t) with ``x_dst = R x_src + t`` for points in camera coordinates: (N, 3, 3), (N, 3)."""
    R = dst.R.double() @ src.R[0].double().T
    t = dst.t.double() - (R @ src.t[0].double()[:, None])[..., 0]
    return R, t


def homographies(mpi: MPI, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every target camera and plane: the homography (N, P, 3, 3) taking a target pixel (u, v, 1) to the
    frontal pixel it sees on the plane, and each plane in target coordinates: normals (N, 3), offsets (N, P)
    with ``n . X = d`` (X in the target camera), for the per-pixel plane depth."""
    R, t = relative_pose(mpi.camera, cameras)                             # (N, 3, 3), (N, 3)
    n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    d = mpi.depths.double()                                               # (P,)
    # plane n . X_src = d  ->  X_dst = (R + t n^T / d) X_src; pixels: x_dst ~ K_dst (R + t n^T / d) K_src^-1 x_src
    fwd = R[:, None] + t[:, None, :, None] * n[None, None, None, :] / d[None, :, None, None]
    Ks, Kd = mpi.camera.K[0].double(), cameras.K.double()
    Hf = Kd[:, None] @ fwd @ torch.linalg.inv(Ks)
    Hinv = torch.linalg.inv(Hf)                                           # target pixel -> frontal pixel
    n_dst = R @ n                                                         # (N, 3)
    d_dst = d[None, :] + (n_dst * t).sum(-1, keepdim=True)                # (N, P)
    return Hinv, n_dst, d_dst


def _pixel_grid(W: int, H: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    return torch.stack([u, v, torch.ones_like(u)], -1)                    # (H, W, 3)


def render_mpi(mpi: MPI, cameras: Cameras, background: torch.Tensor | float = 1.0,
               fast: bool | None = None) -> Rendered:
    """Render ``mpi`` into ``cameras`` (module doc). ``fast``: the numba kernel (no gradient); None picks it
    when no input requires a gradient."""
    if fast is None:
        fast = not (torch.is_grad_enabled() and (mpi.color.requires_grad or mpi.alpha.requires_grad))
    Hinv, n_dst, d_dst = homographies(mpi, cameras)
    if fast:
        return _render_fast(mpi, cameras, Hinv, n_dst, d_dst, background)
    N, P = Hinv.shape[:2]
    H, W = cameras.height, cameras.width
    Hs, Ws = mpi.camera.height, mpi.camera.width
    pix = _pixel_grid(W, H)
    src = torch.einsum("npij,hwj->nphwi", Hinv, pix)                      # (N, P, H, W, 3)
    z = src[..., 2:].clamp(min=1e-12)
    grid = torch.stack([2 * src[..., 0:1] / z / Ws - 1, 2 * src[..., 1:2] / z / Hs - 1], -1)[..., 0, :]
    grid = grid.to(mpi.color.dtype).reshape(N * P, H, W, 2)
    rgba = torch.cat([mpi.color, mpi.alpha], 1)                           # (P, 4, Hs, Ws)
    warped = F.grid_sample(rgba.repeat(N, 1, 1, 1), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False).view(N, P, 4, H, W)
    behind = (src[..., 2] > 0).to(warped.dtype)[:, :, None]               # a plane behind the camera adds nothing
    color, alpha = warped[:, :, :3], warped[:, :, 3:] * behind
    # depth of each plane along each target pixel's ray (z of the ray point on the plane)
    ray = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(cameras.K.double()), pix)      # (N, H, W, 3), z = 1
    denom = torch.einsum("ni,nhwi->nhw", n_dst, ray)                      # (N, H, W)
    zp = (d_dst[:, :, None, None] / denom[:, None]).to(warped.dtype)[:, :, None]        # (N, P, 1, H, W)
    w = alpha * transmittance(alpha)                                      # (N, P, 1, H, W)
    acc = w.sum(1)
    rgb = (w * color).sum(1) + (1 - acc) * _background(background, warped)
    depth = (w * zp).sum(1) / acc.clamp(min=1e-8)
    disparity = (w / zp.clamp(min=1e-8)).sum(1) / acc.clamp(min=1e-8)
    none = acc <= 1e-8
    return Rendered(rgb, acc, depth.masked_fill(none, 0.0), disparity.masked_fill(none, 0.0))


def _background(background, like: torch.Tensor) -> torch.Tensor:
    if isinstance(background, torch.Tensor):
        return background.to(like).reshape(-1, 3, *background.shape[-2:]) if background.dim() > 1 \
            else background.to(like).view(1, 3, 1, 1)
    return torch.full((1, 3, 1, 1), float(background), dtype=like.dtype)


def _render_fast(mpi: MPI, cameras: Cameras, Hinv, n_dst, d_dst, background) -> Rendered:
    N = len(cameras)
    H, W = cameras.height, cameras.width
    color = mpi.color.detach().float().contiguous().numpy()               # no copy for float32 contiguous planes
    alpha = mpi.alpha.detach().float().contiguous().numpy()
    Kinv = torch.linalg.inv(cameras.K.double()).numpy()
    out = np.empty((N, 6, H, W), np.float32)
    _render_kernel(color, alpha, Hinv.numpy(), Kinv, n_dst.numpy(), d_dst.numpy(), out, STOP_T)
    o = torch.from_numpy(out).to(mpi.color.dtype)
    acc = o[:, 3:4]
    rgb = o[:, :3] + (1 - acc) * _background(background, o)
    safe = acc.clamp(min=1e-8)
    none = acc <= 1e-8
    return Rendered(rgb, acc, (o[:, 4:5] / safe).masked_fill(none, 0.0), (o[:, 5:6] / safe).masked_fill(none, 0.0))


@numba.njit(cache=True, parallel=True, fastmath=True)
def _render_kernel(color, alpha, Hinv, Kinv, n_dst, d_dst, out, stop_t):   # pragma: no cover - compiled
    """color (P, 3, Hs, Ws), alpha (P, 1, Hs, Ws) planes; Hinv (N, P, 3, 3); Kinv (N, 3, 3); n_dst (N, 3);
    d_dst (N, P); out (N, 6, H, W) = premultiplied rgb, opacity, sum w z, sum w / z. Bilinear taps outside the
    planes are zero (grid_sample's zeros padding, align_corners=False)."""
    P, Hs, Ws = color.shape[0], color.shape[2], color.shape[3]
    N, H, W = out.shape[0], out.shape[2], out.shape[3]
    for row in numba.prange(N * H):
        n = row // H
        y = row % H
        v = y + 0.5
        inv_d = np.empty(P)
        for p in range(P):
            inv_d[p] = 1.0 / d_dst[n, p]
        for x in range(W):
            u = x + 0.5
            rx = Kinv[n, 0, 0] * u + Kinv[n, 0, 1] * v + Kinv[n, 0, 2]
            ry = Kinv[n, 1, 0] * u + Kinv[n, 1, 1] * v + Kinv[n, 1, 2]
            rz = Kinv[n, 2, 0] * u + Kinv[n, 2, 1] * v + Kinv[n, 2, 2]
            denom = n_dst[n, 0] * rx + n_dst[n, 1] * ry + n_dst[n, 2] * rz   # plane depth along the ray: d / denom
            inv_denom = 1.0 / denom
            T = 1.0
            r = 0.0
            g = 0.0
            b = 0.0
            acc = 0.0
            wz = 0.0
            wd = 0.0
            for p in range(P):
                hz = Hinv[n, p, 2, 0] * u + Hinv[n, p, 2, 1] * v + Hinv[n, p, 2, 2]
                if hz <= 0.0:
                    continue
                iz = 1.0 / hz
                sx = (Hinv[n, p, 0, 0] * u + Hinv[n, p, 0, 1] * v + Hinv[n, p, 0, 2]) * iz - 0.5
                sy = (Hinv[n, p, 1, 0] * u + Hinv[n, p, 1, 1] * v + Hinv[n, p, 1, 2]) * iz - 0.5
                if sx <= -1.0 or sy <= -1.0 or sx >= Ws or sy >= Hs:
                    continue                                  # all four taps outside: nothing
                x0 = int(math.floor(sx))
                y0 = int(math.floor(sy))
                fx = sx - x0
                fy = sy - y0
                w00 = (1.0 - fx) * (1.0 - fy)
                w01 = fx * (1.0 - fy)
                w10 = (1.0 - fx) * fy
                w11 = fx * fy
                if x0 < 0 or y0 < 0 or x0 + 1 >= Ws or y0 + 1 >= Hs:
                    # border: zero the taps outside, clamp their index
                    if x0 < 0:
                        w00 = 0.0
                        w10 = 0.0
                    if x0 + 1 >= Ws:
                        w01 = 0.0
                        w11 = 0.0
                    if y0 < 0:
                        w00 = 0.0
                        w01 = 0.0
                    if y0 + 1 >= Hs:
                        w10 = 0.0
                        w11 = 0.0
                xa = min(max(x0, 0), Ws - 1)
                xb = min(max(x0 + 1, 0), Ws - 1)
                ya = min(max(y0, 0), Hs - 1)
                yb = min(max(y0 + 1, 0), Hs - 1)
                a = (w00 * alpha[p, 0, ya, xa] + w01 * alpha[p, 0, ya, xb] + w10 * alpha[p, 0, yb, xa]
                     + w11 * alpha[p, 0, yb, xb])
                if a <= 0.0:
                    continue
                w = a * T
                r += w * (w00 * color[p, 0, ya, xa] + w01 * color[p, 0, ya, xb] + w10 * color[p, 0, yb, xa]
                          + w11 * color[p, 0, yb, xb])
                g += w * (w00 * color[p, 1, ya, xa] + w01 * color[p, 1, ya, xb] + w10 * color[p, 1, yb, xa]
                          + w11 * color[p, 1, yb, xb])
                b += w * (w00 * color[p, 2, ya, xa] + w01 * color[p, 2, ya, xb] + w10 * color[p, 2, yb, xa]
                          + w11 * color[p, 2, yb, xb])
                acc += w
                wz += w * d_dst[n, p] * inv_denom
                wd += w * denom * inv_d[p]
                T *= 1.0 - a
                if T < stop_t:
                    break
            out[n, 0, y, x] = r
            out[n, 1, y, x] = g
            out[n, 2, y, x] = b
            out[n, 3, y, x] = acc
            out[n, 4, y, x] = wz
            out[n, 5, y, x] = wd


def with_background(mpi: MPI, plate: torch.Tensor, behind: float = BACKGROUND_BEHIND) -> MPI:
    """``mpi`` with the static background ``plate`` (3, H, W) as one more, opaque plane ``behind`` metres behind its
    far plane (ours: IM-Portrait composites its talking heads over a static inpainted background and does not say
    how side views see it; a far plane gives it the parallax of a wall behind the person)."""
    H, W = mpi.camera.height, mpi.camera.width
    if tuple(plate.shape) != (3, H, W):
        raise Morph4DError(f"a background plate for a {W}x{H} MPI is (3, {H}, {W}), got {tuple(plate.shape)}")
    far = mpi.depths[-1:] + behind
    return MPI(torch.cat([mpi.color, plate.to(mpi.color)[None]]), torch.cat([mpi.alpha, torch.ones_like(
        mpi.alpha[:1])]), torch.cat([mpi.depths, far.to(mpi.depths)]), mpi.camera)


def orbit_about(camera: Cameras, centre: torch.Tensor, yaw_deg: float, pitch_deg: float = 0.0) -> Cameras:
    """``camera`` (one) orbited about the world point ``centre`` (the head joint), still looking at it the same
    way: ``yaw_deg`` about the camera's vertical axis (positive: the camera moves to its right, +x),
    ``pitch_deg`` about its horizontal axis (positive: it moves down, +y: OpenCV's y points down). IM-Portrait's side
    views are +-5 degrees."""
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    # rotations in camera coordinates of the head-to-camera vector (0, 0, -r): yaw sends it to (+r sin, 0, -r cos)
    yaw = torch.tensor([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]], dtype=torch.float64)
    pitch = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=torch.float64)
    Q = yaw @ pitch
    R0, t0 = camera.R[0].double(), camera.t[0].double()
    Rc = R0.T                                                             # camera-to-world rotation
    C = -Rc @ t0                                                          # camera centre (world)
    P = centre.double()
    G = Rc @ Q @ R0                                                       # the same rotation in world coordinates
    C2 = P + G @ (C - P)
    R2 = R0 @ G.T                                                         # orientation turned with it
    t2 = -R2 @ C2
    return Cameras(R2[None].to(camera.R), t2[None].to(camera.t), camera.K.clone(), camera.width, camera.height)


def stereo_cameras(camera: Cameras, baseline: float = 0.064) -> Cameras:
    """A stereo pair (left, right) around ``camera``: translated by -+ baseline / 2 along its x axis (ours:
    6.4 cm, a typical interpupillary distance), orientation kept (parallel rig)."""
    shift = torch.tensor([[baseline / 2, 0.0, 0.0], [-baseline / 2, 0.0, 0.0]], dtype=camera.t.dtype)
    return Cameras(camera.R.expand(2, 3, 3).clone(), camera.t.expand(2, 3) + shift, camera.K.expand(2, 3, 3).clone(),
                   camera.width, camera.height)


__all__ = ["NEAR_OFFSET", "FAR_OFFSET", "BACKGROUND_BEHIND", "with_background", "PLANES", "plane_depths", "head_distance", "transmittance",
           "plane_colors", "MPI", "Rendered", "relative_pose", "homographies", "render_mpi", "orbit_about",
           "stereo_cameras"]
