"""Triangle-mesh rasterizer: for every pixel, the visible triangle, its perspective-correct barycentrics
and the camera-space depth of the surface.

Stateless functions returning a ``RasterResult``. Two backends compute the same thing:

* ``"numba"`` (the default): a compiled CPU loop over triangles and their bounding boxes with a z-buffer;
* ``"torch"``: the readable reference twin (pixels x a chunk of triangles at a time), the specification
  the fast path is tested against. It is slow; use it on small images.

Both follow the same rules with the same float64 arithmetic in the same order, so they agree bit for bit
on triangle ids, barycentrics and depth:

* Pixel centres: pixel (row i, column j) is sampled at (u, v) = (j + 0.5, i + 0.5).
* Coverage: a centre is covered when it lies in the triangle's pixel bounding box and its three
  screen-space barycentrics are all ``>= 0`` (either winding; a centre exactly on a shared edge is
  covered by both triangles and the z-test decides).
* Z-test: the largest interpolated 1/z wins (nearest surface); on an exact depth tie the lower triangle
  index wins.
* Triangles with any vertex at ``z <= near`` are skipped, not clipped: the camera never gets that close
  to a head, and skipping keeps both paths simple. Zero-area and non-finite triangles are skipped too.
* Perspective-correct barycentrics: from screen-space (l0, l1, l2), b_i = (l_i / z_i) / sum_k(l_k / z_k)
  and depth = 1 / sum_k(l_k / z_k), since 1/z is affine in screen space.

The outputs are not differentiable w.r.t. vertex positions; ``interpolate`` is differentiable w.r.t.
the attributes.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numba
import numpy as np
import torch

BACKENDS = ("auto", "numba", "torch")


@dataclass
class RasterResult:
    """Per-pixel rasterization output for a batch of B images of H x W pixels.

    triangle_id: (B, H, W) int64 index into ``faces``, -1 where no triangle covers the pixel centre
    bary:        (B, H, W, 3) float32 perspective-correct barycentrics (zeros off-mesh)
    depth:       (B, H, W) float32 camera-space z of the visible surface (0 off-mesh)
    mask:        (B, H, W) bool, ``triangle_id >= 0``
    """

    triangle_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


# ---------------------------------------------------------------------------------------------------
# Reference twin (torch): the specification
# ---------------------------------------------------------------------------------------------------

def _triangle_setup(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float,
                    cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-triangle coefficients, float64.

    Returns ``coef`` (B, T, 3, 3) with screen-space barycentric l_i(u, v) = a_i*u + (b_i*v + c_i) in
    ``coef[..., i, :] = (a_i, b_i, c_i)``; ``inv_z`` (B, T, 3) the vertices' 1/z; and ``bbox`` (B, T, 4)
    int64 = (row0, row1, col0, col1) inclusive pixel ranges whose centres lie in the triangle's bounding
    box, clipped to the image. Skipped triangles get zero coefficients and an empty box (row1 < row0).
    """
    tri = screen.to(torch.float64)[:, faces]  # (B, T, 3 vertices, 3 = u, v, z)
    u, v, z = tri.unbind(-1)  # each (B, T, 3)
    # Edge function of the edge (j, k) opposite vertex i, with (j, k) = (i+1, i+2) mod 3: twice the
    # signed area of (p, p_j, p_k), affine in p = (u, v).
    uj, uk = u.roll(-1, dims=-1), u.roll(-2, dims=-1)
    vj, vk = v.roll(-1, dims=-1), v.roll(-2, dims=-1)
    edge = torch.stack([vj - vk, uk - uj, uj * vk - uk * vj], dim=-1)  # (B, T, 3, 3)
    # Twice the signed area; > 0 means back-facing for a counter-clockwise (outward-normal) mesh, since
    # the image y axis points down.
    area2 = (u[..., 1] - u[..., 0]) * (v[..., 2] - v[..., 0]) - (v[..., 1] - v[..., 0]) * (u[..., 2] - u[..., 0])
    valid = (z > near).all(-1) & (area2 != 0) & torch.isfinite(tri).all(-1).all(-1)  # (B, T)
    if cull_backfaces:
        valid &= area2 < 0
    # Dividing by the signed area normalises the barycentrics (sum 1) and makes "inside" mean all >= 0
    # whichever the winding.
    safe_area2 = torch.where(valid, area2, torch.ones_like(area2))
    coef = torch.where(valid[..., None, None], edge / safe_area2[..., None, None], 0.0)
    inv_z = torch.where(valid[..., None], 1.0 / torch.where(valid[..., None], z, 1.0), 0.0)

    # Pixel j's centre j + 0.5 is in [lo, hi] iff ceil(lo - 0.5) <= j <= floor(hi - 0.5).
    u, v = torch.where(valid[..., None], u, 0.0), torch.where(valid[..., None], v, 0.0)
    row0 = (v.amin(-1) - 0.5).ceil().clamp(0, height)
    row1 = (v.amax(-1) - 0.5).floor().clamp(-1, height - 1)
    col0 = (u.amin(-1) - 0.5).ceil().clamp(0, width)
    col1 = (u.amax(-1) - 0.5).floor().clamp(-1, width - 1)
    row1 = torch.where(valid, row1, -1.0)
    bbox = torch.stack([row0, row1, col0, col1], dim=-1).to(torch.int64)  # (B, T, 4)
    return coef, inv_z, bbox


def _raster_torch(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float,
                  cull_backfaces: bool) -> RasterResult:
    """Pixels against a chunk of triangles at a time, then barycentrics of each pixel's winner."""
    coef, inv_z, bbox = _triangle_setup(screen, faces, height, width, near, cull_backfaces)
    B, T = inv_z.shape[:2]
    # Triangles per chunk: up to 256, with each (B, chunk, 3, H, W) temporary under 2**22 elements (32 MB).
    chunk = max(1, min(256, 2**22 // (3 * B * height * width)))
    device = coef.device
    best_iz = torch.zeros(B, height, width, dtype=torch.float64, device=device)
    best_id = torch.full((B, height, width), -1, dtype=torch.int64, device=device)
    for start in range(0, T, chunk):
        c, iz, box = coef[:, start:start + chunk], inv_z[:, start:start + chunk], bbox[:, start:start + chunk]
        # Only pixels inside the union of the chunk's boxes can be covered, so evaluate just that window
        # (a shortcut: the per-triangle box test below is the rule).
        box = box[(box[..., 0] <= box[..., 1]) & (box[..., 2] <= box[..., 3])]  # (n, 4) non-empty boxes
        if len(box) == 0:
            continue
        r0, r1, c0, c1 = int(box[:, 0].min()), int(box[:, 1].max()), int(box[:, 2].min()), int(box[:, 3].max())
        rows = torch.arange(r0, r1 + 1, device=device)[:, None]  # (h, 1)
        cols = torch.arange(c0, c1 + 1, device=device)  # (w,)
        u, v = cols.to(torch.float64) + 0.5, rows.to(torch.float64) + 0.5  # pixel centres
        lam = c[..., 0, None, None] * u + (c[..., 1, None, None] * v + c[..., 2, None, None])  # (B, t, 3, h, w)
        box = bbox[:, start:start + chunk, :, None, None]  # (B, t, 4, 1, 1)
        inside = ((lam >= 0).all(2) & (rows >= box[:, :, 0]) & (rows <= box[:, :, 1])
                  & (cols >= box[:, :, 2]) & (cols <= box[:, :, 3]))  # (B, t, h, w)
        # 1/z interpolated with screen-space barycentrics, summed in the kernel's order.
        iz = iz[..., None, None]  # (B, t, 3, 1, 1)
        pix_iz = lam[:, :, 0] * iz[:, :, 0] + lam[:, :, 1] * iz[:, :, 1] + lam[:, :, 2] * iz[:, :, 2]
        chunk_iz, chunk_arg = torch.where(inside, pix_iz, 0.0).max(dim=1)  # (B, h, w); ties -> lowest index
        window = (slice(None), slice(r0, r1 + 1), slice(c0, c1 + 1))
        better = chunk_iz > best_iz[window]  # strict, so earlier chunks win ties too
        best_iz[window] = torch.where(better, chunk_iz, best_iz[window])
        best_id[window] = torch.where(better, chunk_arg + start, best_id[window])

    hit = best_id >= 0
    winner = best_id.clamp(min=0).reshape(B, -1)  # (B, P) with P = H*W
    c = torch.gather(coef, 1, winner[..., None, None].expand(-1, -1, 3, 3)).reshape(B, height, width, 3, 3)
    iz = torch.gather(inv_z, 1, winner[..., None].expand(-1, -1, 3)).reshape(B, height, width, 3)
    u = torch.arange(width, dtype=torch.float64, device=device)[:, None] + 0.5  # (W, 1) vs (B, H, W, 3)
    v = torch.arange(height, dtype=torch.float64, device=device)[:, None, None] + 0.5  # (H, 1, 1)
    lam = c[..., 0] * u + (c[..., 1] * v + c[..., 2])  # (B, H, W, 3)
    safe_iz = torch.where(hit, best_iz, 1.0)
    bary = torch.where(hit[..., None], lam * iz / safe_iz[..., None], 0.0)
    depth = torch.where(hit, 1.0 / safe_iz, 0.0)
    return RasterResult(triangle_id=best_id, bary=bary.float(), depth=depth.float(), mask=hit)


# ---------------------------------------------------------------------------------------------------
# Fast path (numba): the same arithmetic, in the same order, as the twin above
# ---------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _store_edge(out, uj, vj, uk, vk, area2):
    """``out[:] = (a, b, c)`` of the edge (j, k) opposite a vertex, normalised as in ``_triangle_setup``."""
    out[0] = (vj - vk) / area2
    out[1] = (uk - uj) / area2
    out[2] = (uj * vk - uk * vj) / area2


@numba.njit(cache=True, parallel=True)
def _setup_kernel(screen, faces, near, cull_backfaces, height, width, coef, inv_z, bbox):
    """``_triangle_setup`` for one triangle per iteration, written into ``coef``, ``inv_z``, ``bbox``."""
    B, T = inv_z.shape[0], inv_z.shape[1]
    for task in numba.prange(B * T):
        b, t = task // T, task % T
        i0, i1, i2 = faces[t, 0], faces[t, 1], faces[t, 2]
        u0, v0, z0 = screen[b, i0, 0], screen[b, i0, 1], screen[b, i0, 2]
        u1, v1, z1 = screen[b, i1, 0], screen[b, i1, 1], screen[b, i1, 2]
        u2, v2, z2 = screen[b, i2, 0], screen[b, i2, 1], screen[b, i2, 2]
        area2 = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
        # x - x is 0 for finite x and NaN for inf or NaN, so the sum is 0 iff all nine are finite.
        finite = (u0 - u0) + (v0 - v0) + (z0 - z0) + (u1 - u1) + (v1 - v1) + (z1 - z1) \
            + (u2 - u2) + (v2 - v2) + (z2 - z2) == 0.0
        valid = finite and z0 > near and z1 > near and z2 > near and area2 != 0.0
        if cull_backfaces:
            valid = valid and area2 < 0.0
        if not valid:
            coef[b, t] = 0.0
            inv_z[b, t] = 0.0
            bbox[b, t, 0], bbox[b, t, 1], bbox[b, t, 2], bbox[b, t, 3] = 0, -1, 0, -1
            continue
        _store_edge(coef[b, t, 0], u1, v1, u2, v2, area2)
        _store_edge(coef[b, t, 1], u2, v2, u0, v0, area2)
        _store_edge(coef[b, t, 2], u0, v0, u1, v1, area2)
        inv_z[b, t, 0], inv_z[b, t, 1], inv_z[b, t, 2] = 1.0 / z0, 1.0 / z1, 1.0 / z2
        # Clamp as floats before converting, so far-off vertices cannot overflow int64.
        bbox[b, t, 0] = int(min(max(np.ceil(min(v0, v1, v2) - 0.5), 0.0), height))
        bbox[b, t, 1] = int(min(max(np.floor(max(v0, v1, v2) - 0.5), -1.0), height - 1))
        bbox[b, t, 2] = int(min(max(np.ceil(min(u0, u1, u2) - 0.5), 0.0), width))
        bbox[b, t, 3] = int(min(max(np.floor(max(u0, u1, u2) - 0.5), -1.0), width - 1))


@numba.njit(cache=True, parallel=True)
def _raster_kernel(coef, inv_z, bbox, num_bands, zbuf, triangle_id, bary, depth, mask):
    """Fill ``triangle_id``, ``bary``, ``depth``, ``mask`` (B, H, W[, 3]) in place; every output and the
    float64 scratch ``zbuf`` (B, H, W) may start uninitialised.

    Work is split into B * num_bands tasks, one horizontal band of one image each, so every task owns
    its pixels (no races) and a single image still uses all cores.
    """
    B, T = inv_z.shape[0], inv_z.shape[1]
    H, W = zbuf.shape[1], zbuf.shape[2]
    band = (H + num_bands - 1) // num_bands
    for task in numba.prange(B * num_bands):
        b = task // num_bands
        top = (task % num_bands) * band
        bottom = min(top + band, H) - 1
        zbuf[b, top:bottom + 1] = 0.0
        triangle_id[b, top:bottom + 1] = -1
        # Pass 1: z-buffer of the largest 1/z and the triangle that produced it.
        for t in range(T):
            r0, r1 = max(bbox[b, t, 0], top), min(bbox[b, t, 1], bottom)
            c0, c1 = bbox[b, t, 2], bbox[b, t, 3]
            if r0 > r1 or c0 > c1:
                continue
            a0, b0, k0 = coef[b, t, 0, 0], coef[b, t, 0, 1], coef[b, t, 0, 2]
            a1, b1, k1 = coef[b, t, 1, 0], coef[b, t, 1, 1], coef[b, t, 1, 2]
            a2, b2, k2 = coef[b, t, 2, 0], coef[b, t, 2, 1], coef[b, t, 2, 2]
            iz0, iz1, iz2 = inv_z[b, t, 0], inv_z[b, t, 1], inv_z[b, t, 2]
            for r in range(r0, r1 + 1):
                v = r + 0.5
                e0, e1, e2 = b0 * v + k0, b1 * v + k1, b2 * v + k2
                for c in range(c0, c1 + 1):
                    u = c + 0.5
                    # "not >= 0" rather than "< 0" so that NaN counts as outside, as in the twin.
                    l0 = a0 * u + e0
                    if not l0 >= 0.0:
                        continue
                    l1 = a1 * u + e1
                    if not l1 >= 0.0:
                        continue
                    l2 = a2 * u + e2
                    if not l2 >= 0.0:
                        continue
                    iz = l0 * iz0 + l1 * iz1 + l2 * iz2
                    if iz > zbuf[b, r, c]:
                        zbuf[b, r, c] = iz
                        triangle_id[b, r, c] = t
        # Pass 2: barycentrics and depth of the winner only.
        for r in range(top, bottom + 1):
            v = r + 0.5
            for c in range(W):
                t = triangle_id[b, r, c]
                mask[b, r, c] = t >= 0
                if t < 0:
                    bary[b, r, c] = 0.0
                    depth[b, r, c] = 0.0
                    continue
                u = c + 0.5
                w0 = (coef[b, t, 0, 0] * u + (coef[b, t, 0, 1] * v + coef[b, t, 0, 2])) * inv_z[b, t, 0]
                w1 = (coef[b, t, 1, 0] * u + (coef[b, t, 1, 1] * v + coef[b, t, 1, 2])) * inv_z[b, t, 1]
                w2 = (coef[b, t, 2, 0] * u + (coef[b, t, 2, 1] * v + coef[b, t, 2, 2])) * inv_z[b, t, 2]
                iz = zbuf[b, r, c]
                bary[b, r, c, 0] = w0 / iz
                bary[b, r, c, 1] = w1 / iz
                bary[b, r, c, 2] = w2 / iz
                depth[b, r, c] = 1.0 / iz


def _raster_numba(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float,
                  cull_backfaces: bool) -> RasterResult:
    """Both kernels on CPU tensors; all buffers start uninitialised and the kernels fill them in parallel."""
    B, T = screen.shape[0], faces.shape[0]
    coef, inv_z, bbox = np.empty((B, T, 3, 3)), np.empty((B, T, 3)), np.empty((B, T, 4), dtype=np.int64)
    _setup_kernel(screen.to(torch.float64).contiguous().numpy(), faces.contiguous().numpy(), near,
                  cull_backfaces, height, width, coef, inv_z, bbox)
    # Enough bands that B=1 keeps every thread busy; twice the thread count evens out the load when
    # the mesh covers the middle of the image more densely than its edges.
    num_bands = max(1, -(-2 * numba.get_num_threads() // B))
    result = RasterResult(triangle_id=torch.empty((B, height, width), dtype=torch.int64),
                          bary=torch.empty((B, height, width, 3), dtype=torch.float32),
                          depth=torch.empty((B, height, width), dtype=torch.float32),
                          mask=torch.empty((B, height, width), dtype=torch.bool))
    _raster_kernel(coef, inv_z, bbox, num_bands, np.empty((B, height, width)), result.triangle_id.numpy(),
                   result.bary.numpy(), result.depth.numpy(), result.mask.numpy())
    return result


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------

def _check_faces(faces: torch.Tensor, num_vertices: int) -> None:
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype != torch.int64:
        got = f"{tuple(faces.shape)} {faces.dtype}" if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces must be a (T, 3) int64 tensor, got {got}")
    if faces.numel():
        low, high = (int(x) for x in faces.aminmax())
        if low < 0 or high >= num_vertices:
            raise ValueError(f"faces must index vertices in [0, {num_vertices}), got range [{low}, {high}]")


def rasterize_screen(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                     backend: str = "auto", *, near: float = 1e-3, cull_backfaces: bool = False) -> RasterResult:
    """Rasterize triangles given in screen space.

    screen: (B, N, 3) float per-vertex (u, v, z_cam): pixel coordinates and camera-space depth
    faces:  (T, 3) int64 vertex indices, either winding
    height, width: image size in pixels
    backend: "numba" (compiled CPU fast path), "torch" (reference twin, any device) or "auto" (= numba)
    near: triangles with any vertex at z <= near are skipped (not clipped)
    cull_backfaces: also skip triangles that are clockwise as seen from the camera, i.e. back faces of
        a counter-clockwise wound mesh
    Results are on ``screen.device``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(screen, torch.Tensor) or screen.ndim != 3 or screen.shape[-1] != 3 \
            or not screen.dtype.is_floating_point:
        got = f"{tuple(screen.shape)} {screen.dtype}" if isinstance(screen, torch.Tensor) else type(screen).__name__
        raise ValueError(f"screen must be a (B, N, 3) floating-point tensor of (u, v, z_cam), got {got}")
    _check_faces(faces, screen.shape[1])
    if not (isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r} x {width!r}")
    height, width = int(height), int(width)

    screen, faces = screen.detach(), faces.to(screen.device)
    if backend == "torch":
        with torch.no_grad():
            return _raster_torch(screen, faces, height, width, near, cull_backfaces)
    r = _raster_numba(screen.cpu(), faces.cpu(), height, width, near, cull_backfaces)
    return RasterResult(*(getattr(r, f.name).to(screen.device) for f in fields(RasterResult)))


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cameras, height: int | None = None,
              width: int | None = None, backend: str = "auto", *, near: float = 1e-3,
              cull_backfaces: bool = False) -> RasterResult:
    """Rasterize a world-space mesh into B cameras.

    vertices: (B, N, 3) world positions, one mesh per camera, or (N, 3) shared by all cameras
    faces:    (T, 3) int64
    cameras:  ``morph4d.cameras.Cameras`` (B cameras, OpenCV world-to-camera, pixel intrinsics)
    height, width: image size; default ``cameras.height`` / ``cameras.width``
    backend, near, cull_backfaces: as in ``rasterize_screen``
    """
    B = len(cameras)
    if not isinstance(vertices, torch.Tensor) or vertices.shape[-1:] != (3,) or vertices.ndim not in (2, 3) \
            or (vertices.ndim == 3 and vertices.shape[0] != B) or not vertices.dtype.is_floating_point:
        got = f"{tuple(vertices.shape)} {vertices.dtype}" if isinstance(vertices, torch.Tensor) \
            else type(vertices).__name__
        raise ValueError(f"vertices must be floating-point (N, 3) or (B={B}, N, 3) to match the cameras, got {got}")
    if vertices.ndim == 2:
        vertices = vertices.expand(B, -1, -1)
    height = cameras.height if height is None else height
    width = cameras.width if width is None else width
    screen = cameras.to(vertices.dtype).project(vertices)  # (B, N, 3): (u, v, z_cam)
    return rasterize_screen(screen, faces, height, width, backend, near=near, cull_backfaces=cull_backfaces)


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, raster: RasterResult) -> torch.Tensor:
    """Per-vertex attributes -> per-pixel values with the raster's perspective-correct barycentrics.

    attributes: (B, N, C) per camera or (N, C) shared; any floating dtype; differentiable
    faces: (T, 3) int64, the faces that were rasterized
    Returns (B, H, W, C) in ``attributes.dtype``, zeros off-mesh.
    """
    B, H, W = raster.triangle_id.shape
    if not isinstance(attributes, torch.Tensor) or attributes.ndim not in (2, 3) \
            or (attributes.ndim == 3 and attributes.shape[0] != B) or not attributes.dtype.is_floating_point:
        got = f"{tuple(attributes.shape)} {attributes.dtype}" if isinstance(attributes, torch.Tensor) \
            else type(attributes).__name__
        raise ValueError(f"attributes must be a floating-point (N, C) or (B={B}, N, C) tensor, got {got}")
    N, C = attributes.shape[-2:]
    _check_faces(faces, N)
    vertex = faces[raster.triangle_id.clamp(min=0)]  # (B, H, W, 3) vertex ids of each pixel's triangle
    if attributes.ndim == 3:  # offset into the flattened (B*N, C) attributes
        vertex = vertex + N * torch.arange(B, device=vertex.device).view(B, 1, 1, 1)
        attributes = attributes.reshape(B * N, C)
    corners = attributes[vertex]  # (B, H, W, 3, C)
    values = (raster.bary.to(attributes.dtype)[..., None] * corners).sum(-2)  # (B, H, W, C)
    return torch.where(raster.mask[..., None], values, 0.0)
