"""Differentiable 3D Gaussian splatting (3DGS, Kerbl et al. 2023): Gaussians -> image, alpha, depth.

``render_gaussians`` is a stateless function returning a ``GaussianRenderResult``. Backends:

* ``"numba"``: projection in plain torch (autograd differentiates it), then per-pixel compositing as a
  ``torch.autograd.Function`` whose forward and backward are compiled CPU kernels (``_kernels.py``);
* ``"torch"``: the readable reference twin, the specification: the same projection, then every pixel
  against every Gaussian (dense, chunked over pixels), differentiated by autograd. Small scenes only;
* ``"gsplat"``: ``gsplat.rasterization`` (CUDA only; its alpha clamp is 0.999, not 0.99);
* ``"auto"``: gsplat for CUDA inputs when gsplat imports, else numba.

The rules (3DGS ``forward.cu``; the numba and torch backends follow them exactly):

1. Camera frame ``x_cam = R x + t`` (OpenCV, ``morph4d.cameras``); Gaussians with ``z_cam <= near`` are
   culled.
2. 3D covariance ``Sigma = R_q diag(s)^2 R_q^T``, quaternions wxyz (normalised here). EWA: the 2D
   covariance is ``J R Sigma R^T J^T + 0.3 I`` (0.3 px^2 is 3DGS's low-pass dilation), J the Jacobian of
   the perspective projection at the mean, with x/z and y/z clamped to 1.3x the field of view (gsplat's
   form of 3DGS's limit, which also holds for an off-centre principal point).
3. 2D mean ``(fx x/z + cx, fy y/z + cy)``; pixel (row i, column j) is sampled at ``(j + 0.5, i + 0.5)``.
4. Radius ``r = ceil(3 sqrt(lambda_max))`` with ``lambda_max = mid + sqrt(max(0.1, mid^2 - det))``; the
   Gaussian is listed in the 16 x 16 tiles ``[floor((u - r_u) / 16), ceil((u + r_u) / 16))`` (same in v),
   clipped to the image, and culled if that is empty or ``det <= 0``. 3DGS takes ``r_u = r_v = r``; we
   shrink each to ``floor(sqrt(2 ln(255 opacity) Sigma_uu)) + 1`` where smaller: outside the ellipse
   ``d^T Sigma^-1 d = 2 ln(255 opacity)`` alpha < 1/255, so the tiles left out hold no pixel that rule
   6 draws (the image is the same; low-opacity Gaussians enter fewer tiles).
5. Colour: RGB as given, or spherical harmonics (degree 0..3, 3DGS basis and signs) evaluated at the unit
   direction camera centre -> mean, plus 0.5, clamped at 0.
6. Each pixel takes the Gaussians of its tile in increasing ``z_cam`` (stable: ties by index) with
   ``d = mean2d - pixel``, ``power = -(a dx^2 + c dy^2) / 2 - b dx dy`` (conic ``[[a, b], [b, c]]``):
   skipped if ``power > 0`` (never, for the positive definite conics of step 4);
   ``alpha = min(0.99, opacity exp(power))``; skipped if ``alpha < 1/255``; if ``T (1 - alpha) < 1e-4``
   the pixel stops without that Gaussian; else ``C += f alpha T``, ``T *= 1 - alpha`` (T starts at 1).
   ``f`` = (r, g, b, z_cam). The numba kernels compute in float64 and get exp(power) from products of
   per-Gaussian constants (``_kernels._row_state``), equal to exp() within ~1e-14.
7. ``image = C_rgb + T background``, ``alpha = 1 - T``, ``depth = C_z / max(alpha, 1e-10)`` (expected
   depth, gsplat's "ED"; 0 where nothing is drawn).

Gradients flow to means, quats, scales, opacities and colours / SH (not to the cameras). Where the 0.99
clamp is active, alpha has zero gradient w.r.t. the Gaussian (as gsplat and autograd; 3DGS ignores it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from morph4d.avatar.gaussians import _kernels
from morph4d.avatar.gaussians._kernels import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE
from morph4d.cameras import Cameras

BACKENDS = ("auto", "numba", "torch", "gsplat")
NEAR = 0.01  # metres: default near plane (gsplat's default; a head is never closer to a camera)
DILATION = 0.3  # px^2 added to the 2D covariance (3DGS low-pass filter)
FOV_MARGIN = 0.3  # x/z and y/z are clamped to the field of view plus 30% in the Jacobian (3DGS: 1.3 tan_fov)

# Real spherical harmonics constants and signs as in 3DGS (utils/sh_utils.py, forward.cu).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


@dataclass
class GaussianRenderResult:
    """B rendered views of H x W pixels of G Gaussians.

    image:   (B, H, W, 3) colour composited over the background (in [0, 1] for colours in [0, 1])
    alpha:   (B, H, W) accumulated opacity 1 - T
    depth:   (B, H, W) expected camera-space z of the drawn Gaussians (0 where alpha = 0)
    radii:   (B, G) int32 screen radius in pixels (3 sigma of the dilated 2D Gaussian), 0 where culled
    visible: (B, G) bool, radii > 0
    means2d: (B, G, 2) projected means in pixels, a node of the autograd graph (call ``retain_grad()``
             before ``backward`` to read the view-space gradient 3DGS densifies by); None for gsplat
    """

    image: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor
    means2d: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------
# Math shared by every backend: quaternions, spherical harmonics
# ---------------------------------------------------------------------------------------------------

def _rotation_entries(w, x, y, z) -> list[list[torch.Tensor]]:
    """Rows of the rotation matrix of the unit quaternion (w, x, y, z), as nested lists of tensors."""
    return [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` in wxyz order -> rotation matrices ``(..., 3, 3)``."""
    rows = _rotation_entries(*q.unbind(-1))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _sh_terms(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """The (degree + 1)^2 real SH basis functions (3DGS order and signs) at unit directions (x, y, z)."""
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return out


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Unit directions ``(..., 3)`` -> the ``(degree + 1)^2`` real SH basis values ``(..., K)`` (3DGS order)."""
    return torch.stack(_sh_terms(*dirs.unbind(-1), degree), dim=-1)


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """The degree-0 coefficient that renders as ``rgb`` (3DGS RGB2SH): ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / SH_C0


# ---------------------------------------------------------------------------------------------------
# Projection (plain torch, shared by the numba and torch backends): rules 1-5
# ---------------------------------------------------------------------------------------------------

# Rows of the (10, B, G) projected parameters that both CPU backends composite (``_kernels`` layout).
X, Y, CONIC_A, CONIC_B, CONIC_C, OPACITY, RED, GREEN, BLUE, DEPTH = range(10)


@dataclass
class _Projected:
    """params: (10, B, G), rows X, Y (2D mean, pixels), CONIC_A, CONIC_B, CONIC_C (the inverse 2D
    covariance [[a, b], [b, c]]), OPACITY, RED, GREEN, BLUE, DEPTH (z_cam); radii: (B, G) int32;
    rects: (4, B, G) int64 tile ranges x0, x1, y0, y1, end-exclusive (empty where culled);
    means2d: (B, G, 2) the 2D means that rows X, Y are computed from (for view-space gradients)."""

    params: torch.Tensor
    radii: torch.Tensor
    rects: torch.Tensor
    means2d: torch.Tensor


def _project(means, quats, scales, opacities, colors, cameras: Cameras, sh_degree: int | None,
             near: float) -> _Projected:
    """Rules 1-5. Every per-Gaussian quantity is a (B, G) or (G,) tensor of its own: many small
    elementwise ops are much faster on the CPU than batched 3x3 matmuls or stacks along a last dim."""
    B, G, W, H = len(cameras), means.shape[0], cameras.width, cameras.height
    R, t, K = (x.to(means) for x in (cameras.R, cameras.t, cameras.K))
    # 1. Camera frame; culled Gaussians get z = 1 so that no inf/NaN reaches autograd.
    tx, ty, tz = (R @ means.T + t[..., None]).unbind(1)  # (B, G) each
    in_front = tz > near
    z = torch.where(in_front, tz, 1.0)
    # 2. EWA: cov2d = J R Sigma R^T J^T = P P^T with P = J R R_q diag(s) (B, G, 2 x 3 entries).
    Rq = _rotation_entries(*F.normalize(quats, dim=-1).unbind(-1))  # (G,) entries
    s = scales.unbind(-1)
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]  # (B, 1)
    lim_x, lim_y = FOV_MARGIN * 0.5 * W / fx, FOV_MARGIN * 0.5 * H / fy
    u = torch.clamp(tx / z, -(cx / fx + lim_x), (W - cx) / fx + lim_x)
    v = torch.clamp(ty / z, -(cy / fy + lim_y), (H - cy) / fy + lim_y)
    # Rows of J R: (f / z) (R_row - (x/z) R_2) for the image axes x and y.
    JR = [[fx / z * (R[:, 0, j, None] - u * R[:, 2, j, None]) for j in range(3)],
          [fy / z * (R[:, 1, j, None] - v * R[:, 2, j, None]) for j in range(3)]]  # (B, G) entries
    P = [[(JR[i][0] * Rq[0][m] + JR[i][1] * Rq[1][m] + JR[i][2] * Rq[2][m]) * s[m] for m in range(3)]
         for i in range(2)]
    a = P[0][0] * P[0][0] + P[0][1] * P[0][1] + P[0][2] * P[0][2] + DILATION
    b = P[0][0] * P[1][0] + P[0][1] * P[1][1] + P[0][2] * P[1][2]
    c = P[1][0] * P[1][0] + P[1][1] * P[1][1] + P[1][2] * P[1][2] + DILATION
    det = a * c - b * b
    # 3. 2D mean.
    mx, my = fx * tx / z + cx, fy * ty / z + cy
    valid = in_front & (det > 0) & torch.isfinite(mx) & torch.isfinite(my) & torch.isfinite(det)
    det = torch.where(valid, det, 1.0)
    conic = [torch.where(valid, c / det, 1.0), torch.where(valid, -b / det, 0.0), torch.where(valid, a / det, 1.0)]
    means2d = torch.stack([torch.where(valid, mx, 0.0), torch.where(valid, my, 0.0)], -1)  # (B, G, 2)
    mx, my = means2d.unbind(-1)  # downstream of means2d, so its .grad is the view-space gradient

    # 4. Screen radius and tile rectangle (integers, no gradient).
    with torch.no_grad():
        mid = 0.5 * (a + c)
        radius = torch.ceil(3 * torch.sqrt(mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))))
        level = 2 * torch.log(torch.clamp(opacities * (1 / ALPHA_MIN), min=1.0))  # (G,) alpha >= 1/255 inside
        rx = torch.minimum(radius, torch.floor(torch.sqrt(level * a)) + 1)  # (B, G) pixels
        ry = torch.minimum(radius, torch.floor(torch.sqrt(level * c)) + 1)
        tiles_x, tiles_y = -(-W // TILE), -(-H // TILE)
        rects = torch.stack([torch.floor((mx - rx) / TILE).clamp(0, tiles_x),
                             torch.ceil((mx + rx) / TILE).clamp(0, tiles_x),
                             torch.floor((my - ry) / TILE).clamp(0, tiles_y),
                             torch.ceil((my + ry) / TILE).clamp(0, tiles_y)])  # (4, B, G)
        visible = valid & (rects[1] > rects[0]) & (rects[3] > rects[2]) & torch.isfinite(radius)
        radii = torch.where(visible, radius, 0).to(torch.int32)
        rects = torch.where(visible, rects, 0).to(torch.int64)

    # 5. Colours: (B, G) per channel.
    if colors.dim() == 2:
        rgb = colors.T[:, None].expand(3, B, G)
    else:
        degree = round(math.sqrt(colors.shape[1])) - 1 if sh_degree is None else sh_degree
        d = means.T - cameras.centers.to(means)[..., None]  # (B, 3, G): camera centre -> mean
        d = d / d.norm(dim=1, keepdim=True).clamp(min=1e-12)
        basis = torch.stack(_sh_terms(*d.unbind(1), degree))  # (K, B, G)
        rgb = torch.clamp_min(torch.einsum("kbg,gkc->cbg", basis, colors[:, :len(basis)]) + 0.5, 0.0)
    params = torch.stack([mx, my, *conic, opacities.expand(B, G), *rgb, z])  # (10, B, G)
    return _Projected(params, radii, rects, means2d)


# ---------------------------------------------------------------------------------------------------
# Reference twin (torch): rule 6, every pixel against every Gaussian
# ---------------------------------------------------------------------------------------------------

def _composite_torch(p: _Projected, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule 6 densely: returns accumulated (r, g, b, z) (B, H, W, 4) and final transmittance (B, H, W)."""
    _, B, G = p.params.shape
    order = torch.argsort(p.params[DEPTH].detach(), dim=1, stable=True)  # (B, G) front to back
    params = torch.take_along_dim(p.params, order[None], dim=2)  # (10, B, G) sorted
    rects = torch.take_along_dim(p.rects, order[None], dim=2)  # (4, B, G)
    device = params.device
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    rows, cols = rows.reshape(-1, 1), cols.reshape(-1, 1)  # (P, 1) pixel indices
    chunk = max(1, 2**22 // max(G, 1))  # pixels per step, so that each (pixels, G) temporary is <= 16 MB
    out_features, out_T = [], []
    for bi in range(B):
        x, y, a, b, c, opacity = params[:RED, bi]  # (G,) each
        features = params[RED:, bi].T  # (G, 4)
        x0, x1, y0, y1 = rects[:, bi]
        for start in range(0, height * width, chunk):
            r, col = rows[start:start + chunk], cols[start:start + chunk]  # (p, 1)
            dx, dy = x - (col + 0.5), y - (r + 0.5)  # (p, G)
            power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
            in_tile = (col // TILE >= x0) & (col // TILE < x1) & (r // TILE >= y0) & (r // TILE < y1)
            alpha = torch.clamp(opacity * torch.exp(power.clamp(max=0.0)), max=ALPHA_MAX)
            valid = in_tile & (power <= 0) & (alpha >= ALPHA_MIN)
            alpha = torch.where(valid, alpha, 0.0)
            # The first Gaussian that would take T below T_MIN stops the pixel; T only decreases, so
            # the kept ones are exactly the valid ones before it.
            keep = valid & (torch.cumprod(1 - alpha, dim=-1) >= T_MIN)
            alpha = torch.where(keep, alpha, 0.0)
            trans = torch.cumprod(1 - alpha, dim=-1)
            T_before = torch.cat([torch.ones_like(alpha[:, :1]), trans], dim=-1)[:, :-1]
            out_features.append((alpha * T_before) @ features)  # (p, 4)
            out_T.append(torch.prod(1 - alpha, dim=-1))
    return (torch.cat(out_features).reshape(B, height, width, 4), torch.cat(out_T).reshape(B, height, width))


# ---------------------------------------------------------------------------------------------------
# Fast path (numba): rule 6 as a compiled forward + backward
# ---------------------------------------------------------------------------------------------------

class _CompositeNumba(torch.autograd.Function):
    """params (10, B, G) -> (accumulated (r, g, b, z) (B, H, W, 4), final T (B, H, W)); CPU, float64 inside."""

    @staticmethod
    def forward(ctx, params, offsets, entries, height, width):
        B = params.shape[1]
        packed = _kernels.pack(params.detach().to(torch.float64).contiguous().numpy())  # (B, G, NUM_PACKED)
        out_features, out_T = np.empty((B, height, width, 4)), np.empty((B, height, width))
        last = np.empty((B, height, width), dtype=np.int64)
        with numba.parallel_chunksize(1):  # tiles differ in cost: hand them out one at a time
            _kernels.composite_forward(packed, offsets, entries, -(-width // TILE), height, width, out_features,
                                       out_T, last)
        ctx.state = (packed, offsets, entries, out_T, last, height, width, params.dtype)
        return torch.from_numpy(out_features).to(params.dtype), torch.from_numpy(out_T).to(params.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_features, grad_T):
        packed, offsets, entries, final_T, last, height, width, dtype = ctx.state
        B, G = packed.shape[:2]
        grad_entries = np.empty((len(entries), 10))
        with numba.parallel_chunksize(1):
            _kernels.composite_backward(packed, offsets, entries, -(-width // TILE), height, width, final_T, last,
                                        grad_features.to(torch.float64).contiguous().numpy(),
                                        grad_T.to(torch.float64).contiguous().numpy(), grad_entries)
        grad = _kernels.sum_entries(grad_entries, offsets, entries, B, G)  # (10, B, G)
        return torch.from_numpy(grad).to(dtype), None, None, None, None


def _composite_numba(p: _Projected, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = _kernels.depth_order(p.params[DEPTH].detach().to(torch.float64).contiguous().numpy())  # (B, G)
    offsets, entries = _kernels.bin_gaussians(p.rects.numpy(), order, -(-width // TILE), -(-height // TILE))
    return _CompositeNumba.apply(p.params, offsets, entries, height, width)


# ---------------------------------------------------------------------------------------------------
# gsplat (CUDA)
# ---------------------------------------------------------------------------------------------------

def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _render_gsplat(means, quats, scales, opacities, colors, cameras, background, sh_degree, near):
    import gsplat

    B = len(cameras)
    viewmats = torch.eye(4, dtype=means.dtype, device=means.device).repeat(B, 1, 1)  # OpenCV world-to-camera
    viewmats[:, :3, :3], viewmats[:, :3, 3] = cameras.R.to(means), cameras.t.to(means)
    if colors.dim() == 3 and sh_degree is None:
        sh_degree = round(math.sqrt(colors.shape[1])) - 1
    rendered, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, cameras.K.to(means), cameras.width, cameras.height,
        near_plane=near, sh_degree=sh_degree, packed=False, backgrounds=background.expand(B, 3),
        render_mode="RGB+ED", rasterize_mode="classic")
    radii = meta["radii"]
    radii = (radii.amax(-1) if radii.dim() == 3 else radii).to(torch.int32)  # gsplat >= 1.5: per-axis radii
    return GaussianRenderResult(image=rendered[..., :3], alpha=alphas[..., 0], depth=rendered[..., 3],
                                radii=radii, visible=radii > 0)


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------

def _check(name: str, x, shape: tuple, expected: str, dtype=None) -> None:
    ok = isinstance(x, torch.Tensor) and x.dim() == len(shape) and x.dtype.is_floating_point \
        and all(s is None or s == n for s, n in zip(shape, x.shape)) and (dtype is None or x.dtype == dtype)
    if not ok:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape {expected}"
                         f"{'' if dtype is None else f' and dtype {dtype}'}, got {got}")


def render_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                     colors: torch.Tensor, cameras: Cameras, background=(1.0, 1.0, 1.0),
                     sh_degree: int | None = None, backend: str = "auto", *, near: float = NEAR
                     ) -> GaussianRenderResult:
    """Render G Gaussians into B cameras (rules in the module docstring).

    means:     (G, 3) world positions
    quats:     (G, 4) rotations, wxyz, any norm (normalised here)
    scales:    (G, 3) standard deviations along the rotated axes (activated, > 0)
    opacities: (G,) in [0, 1] (activated)
    colors:    (G, 3) RGB, or (G, K, 3) SH coefficients with K = 1, 4, 9 or 16 (3DGS order)
    cameras:   ``morph4d.cameras.Cameras`` (B cameras; OpenCV world-to-camera, pixel intrinsics)
    background: 3 floats or a (3,) tensor, composited where alpha < 1
    sh_degree: with SH colours, use only the first (sh_degree + 1)^2 coefficients (default: all)
    backend:   "auto", "numba", "torch" or "gsplat" (see the module docstring)
    near:      Gaussians whose mean has z_cam <= near (metres) are culled
    All tensors share one floating dtype and device; results are on that device.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be a morph4d.cameras.Cameras, got {type(cameras).__name__}")
    _check("means", means, (None, 3), "(G, 3)")
    G, dtype = means.shape[0], means.dtype
    _check("quats", quats, (G, 4), f"(G, 4) with G = {G}", dtype)
    _check("scales", scales, (G, 3), f"(G, 3) with G = {G}", dtype)
    _check("opacities", opacities, (G,), f"(G,) with G = {G}", dtype)
    if isinstance(colors, torch.Tensor) and colors.dim() == 3:
        _check("colors", colors, (G, None, 3), f"(G, K, 3) with G = {G}", dtype)
        if colors.shape[1] not in (1, 4, 9, 16):
            raise ValueError(f"SH colors must have K = 1, 4, 9 or 16 coefficients (degree 0..3), got K = "
                             f"{colors.shape[1]}")
        if sh_degree is not None and not (0 <= sh_degree and (sh_degree + 1) ** 2 <= colors.shape[1]):
            raise ValueError(f"sh_degree must be in [0, {round(math.sqrt(colors.shape[1])) - 1}] for K = "
                             f"{colors.shape[1]} coefficients, got {sh_degree}")
    else:
        _check("colors", colors, (G, 3), f"(G, 3) RGB or (G, K, 3) SH with G = {G}", dtype)
        if sh_degree is not None:
            raise ValueError(f"sh_degree={sh_degree} needs SH colors of shape (G, K, 3), got RGB (G, 3)")
    devices = {x.device for x in (means, quats, scales, opacities, colors)}
    if len(devices) != 1:
        raise ValueError(f"means, quats, scales, opacities and colors must be on one device, got {devices}")
    background = torch.as_tensor(background, dtype=dtype, device=means.device)
    if background.shape != (3,):
        raise ValueError(f"background must be 3 values (RGB), got shape {tuple(background.shape)}")

    if backend == "auto":
        backend = "gsplat" if means.is_cuda and _gsplat_available() else "numba"
    if backend == "gsplat":
        if not (means.is_cuda and _gsplat_available()):
            raise RuntimeError("backend='gsplat' needs the gsplat package, a CUDA device and CUDA inputs")
        return _render_gsplat(means, quats, scales, opacities, colors, cameras, background, sh_degree, near)

    device, H, W = means.device, cameras.height, cameras.width
    if backend == "numba":
        means, quats, scales, opacities, colors = (x.cpu() for x in (means, quats, scales, opacities, colors))
        cameras = cameras.to("cpu")
    p = _project(means, quats, scales, opacities, colors, cameras, sh_degree, near)
    composite = _composite_numba if backend == "numba" else _composite_torch
    features, T = (x.to(device) for x in composite(p, H, W))  # (B, H, W, 4) = (r, g, b, z), (B, H, W)
    # 7. Background, alpha, expected depth.
    alpha = 1 - T
    return GaussianRenderResult(image=features[..., :3] + T[..., None] * background, alpha=alpha,
                                depth=features[..., 3] / alpha.clamp(min=1e-10), radii=p.radii.to(device),
                                visible=p.radii.to(device) > 0, means2d=p.means2d)
