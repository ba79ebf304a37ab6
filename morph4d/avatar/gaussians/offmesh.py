"""Gaussians off the head mesh (hair, glasses) from triangulated keypoints (MVP4D S2.4).

MVP4D: "keypoints matched between each key view's first frame and the other views, points seen in more
than 3 views triangulated with the known cameras, each new Gaussian bound to its nearest triangle". Here:

1. ``match_tracks``: SIFT (OpenCV, offline) on the first frame of every view; for each key view, each of
   its keypoints is matched to every other view (Lowe's ratio test 0.75, then the epipolar line of the
   known cameras within ``epipolar_px``). A track = one key-view keypoint + its matches.
2. ``triangulate``: linear DLT (Hartley & Zisserman §12.2) over all observing views, batched over tracks;
   ``reprojection_error`` (max over the views) rejects bad matches.
3. ``offmesh_gaussians``: tracks seen in > 3 views, reprojected within ``max_error_px``, lying more than
   ``min_offset`` metres from the mesh (points on the skin are already covered by the per-triangle
   Gaussians), thinned to one per ``voxel`` cube, become Gaussians bound to the triangle with the nearest
   centroid; their local mean ``R^T (X - centroid) / k`` keeps them off the surface, and they move
   rigidly with that triangle when the head is re-animated.
4. ``hull_points`` (our addition; SIFT finds few stable keypoints on hair strands at 64-128 px): the
   visual hull of the foreground masks (voxels of the mesh's padded bounding box that project inside the
   mask in every view that sees them, Laurentini 1994), reduced to its shell (voxels with a carved
   6-neighbour). Shell voxels are seeded like triangulated points (observed = inside image and mask);
   those near the mesh are dropped by the same ``min_offset`` test, so what remains is hair, beard or
   glasses outside the head model.

Pixel coordinates follow CONVENTIONS.md (pixel centres at +0.5); OpenCV's keypoints have centres at
integers and get +0.5 at this boundary (``_detect``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from morph4d.avatar.gaussians.binding import BoundGaussians, triangle_frames
from morph4d.avatar.gaussians.rasterize import rgb_to_sh
from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError


@dataclass(frozen=True)
class OffMeshConfig:
    key_views: int = 8             # key views (MVP4D: 8), spread evenly over the view list
    min_views: int = 4             # "seen in more than 3 views"
    ratio: float = 0.75            # Lowe's ratio test
    epipolar_px: float = 1.5       # max distance of a match to the key point's epipolar line
    max_error_px: float = 1.0      # max reprojection error over the observing views
    min_offset: float = 0.004      # metres from the nearest triangle centroid: closer points are skin
    voxel: float = 0.002           # metres: one new Gaussian per cube of this side
    scale: float = 0.002           # metres: initial world standard deviation of a new Gaussian
    opacity: float = 0.1           # GaussianAvatars' initial opacity
    hull_voxel: float | None = 0.004  # metres: voxel side of the visual-hull seeds (None: SIFT tracks only) ...
    hull_voxel_pixels: float | None = 1.2   # ... or this many pixels at the head's distance, if larger (None: off)
    hull_margin: float = 0.08      # metres: the hull is searched in the mesh's bounding box grown by this
    mask_dilate: int = 1           # pixels: masks are dilated so that one missed pixel carves nothing


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise Morph4DError("off-mesh Gaussians need OpenCV's SIFT (opencv-python-headless, a dependency of "
                           "morph4d: reinstall with `pip install -e .`), or disable them (FitConfig.offmesh=None)") from e
    return cv2


DETECT_SIZE = 512  # small images are upsampled to about this size first: SIFT finds few keypoints below it


def _detect(image: torch.Tensor):
    """SIFT keypoints ``(K, 2)`` in our pixel convention and descriptors ``(K, 128)`` of an image (3, H, W)."""
    cv2 = _cv2()
    s = max(1, DETECT_SIZE // max(image.shape[1:]))
    if s > 1:
        image = torch.nn.functional.interpolate(image[None], scale_factor=s, mode="bicubic", align_corners=False)[0]
    gray = (image.mean(0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    kps, desc = cv2.SIFT_create().detectAndCompute(gray, None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    # OpenCV's pixel centres are at integers: +0.5 gives ours, at the upsampled size, then / s
    return (np.array([k.pt for k in kps], np.float32) + 0.5) / s, desc


def fundamental(cameras: Cameras, a: int, b: int) -> torch.Tensor:
    """Fundamental matrix ``(3, 3)`` with ``x_b^T F x_a = 0`` for homogeneous pixels of cameras a and b."""
    R = cameras.R[b].double() @ cameras.R[a].double().T
    t = cameras.t[b].double() - R @ cameras.t[a].double()
    tx = torch.tensor([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]], dtype=torch.float64)
    return torch.linalg.inv(cameras.K[b].double()).T @ tx @ R @ torch.linalg.inv(cameras.K[a].double())


def match_tracks(images: torch.Tensor, cameras: Cameras, cfg: OffMeshConfig = OffMeshConfig()):
    """Tracks from the key views' keypoints: ``observed (N, V)`` bool and ``pixels (N, V, 2)``.

    images: ``(V, 3, H, W)`` in [0, 1], the first frame of each view; cameras: the V cameras.
    """
    cv2 = _cv2()
    V = images.shape[0]
    feats = [_detect(img) for img in images]
    keys = sorted({round(i * V / min(cfg.key_views, V)) for i in range(min(cfg.key_views, V))})
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    observed, pixels = [], []
    for a in keys:
        pa, da = feats[a]
        if len(pa) == 0:
            continue
        obs = np.zeros((len(pa), V), bool)
        pix = np.zeros((len(pa), V, 2), np.float32)
        obs[:, a], pix[:, a] = True, pa
        for b in range(V):
            pb, db = feats[b]
            if b == a or len(pb) < 2:
                continue
            pairs = [m for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance]
            if not pairs:
                continue
            ia = np.array([m[0].queryIdx for m in pairs])
            ib = np.array([m[0].trainIdx for m in pairs])
            lines = torch.from_numpy(np.c_[pa[ia], np.ones(len(ia))]).double() @ fundamental(cameras, a, b).T  # (M, 3)
            xb = torch.from_numpy(np.c_[pb[ib], np.ones(len(ib))]).double()
            dist = (xb * lines).sum(-1).abs() / lines[:, :2].norm(dim=-1).clamp(min=1e-12)
            ok = (dist < cfg.epipolar_px).numpy()
            obs[ia[ok], b], pix[ia[ok], b] = True, pb[ib[ok]]
        observed.append(obs)
        pixels.append(pix)
    if not observed:
        return torch.zeros(0, V, dtype=torch.bool), torch.zeros(0, V, 2)
    return torch.from_numpy(np.concatenate(observed)), torch.from_numpy(np.concatenate(pixels))


def _projections(cameras: Cameras) -> torch.Tensor:
    """``P = K [R | t]``, ``(V, 3, 4)`` float64."""
    return cameras.K.double() @ torch.cat([cameras.R.double(), cameras.t.double()[:, :, None]], -1)


def triangulate(cameras: Cameras, observed: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Linear (DLT) triangulation of N points, ``observed (N, V)`` bool, ``pixels (N, V, 2)`` -> ``(N, 3)``.

    Each observation contributes rows ``u P_3 - P_1`` and ``v P_3 - P_2``; unobserved views contribute
    zero rows. The point is the right singular vector of the smallest singular value. Needs >= 2 views.
    """
    if observed.dim() != 2 or pixels.shape != (*observed.shape, 2) or observed.shape[1] != len(cameras):
        raise Morph4DError("observed must be (N, V) and pixels (N, V, 2) for the V cameras")
    P = _projections(cameras)  # (V, 3, 4)
    uv = pixels.double()
    rows = torch.stack([uv[..., 0, None] * P[:, 2] - P[:, 0], uv[..., 1, None] * P[:, 2] - P[:, 1]], 2)  # (N, V, 2, 4)
    A = (rows * observed[..., None, None]).flatten(1, 2)  # (N, 2V, 4)
    # Normalise rows so that far and near views weigh alike.
    A = A / A.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    X = torch.linalg.svd(A).Vh[:, -1]  # (N, 4)
    return (X[:, :3] / X[:, 3:]).float()


def reprojection_error(cameras: Cameras, points: torch.Tensor, observed: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Max pixel distance ``(N,)`` between observed pixels and the reprojected points (inf behind a camera)."""
    proj = cameras.project(points.to(cameras.R))  # (V, N, 3)
    err = (proj[..., :2].transpose(0, 1) - pixels).norm(dim=-1)  # (N, V)
    err = torch.where(proj[..., 2].T > 0, err, torch.inf)
    return torch.where(observed, err, 0.0).amax(-1)


def bind_points(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor):
    """Bind world points ``(M, 3)`` to the triangle with the nearest centroid on the mesh ``vertices``:
    returns ``binding (M,)`` int64, ``local_means (M, 3)`` (in units of k) and the distances ``(M,)``."""
    R, k, centroid = triangle_frames(vertices, faces)
    binding = torch.cat([torch.cdist(chunk, centroid).argmin(-1) for chunk in points.split(4096)]) \
        if len(points) else torch.zeros(0, dtype=torch.int64)
    offset = points - centroid[binding]
    local = (R[binding].transpose(-1, -2) @ offset[:, :, None])[..., 0] / k[binding, None]
    return binding, local, offset.norm(dim=-1)


def _lookup(masks: torch.Tensor, proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the projected points ``proj (V, N, 3)`` (u, v, z) fall inside the image, and of those, inside
    ``masks (V, H, W)`` bool (nearest pixel): two ``(V, N)`` bool tensors."""
    V, H, W = masks.shape
    u, v, z = proj.unbind(-1)
    in_image = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    col, row = u.clamp(0, W - 1).long(), v.clamp(0, H - 1).long()  # floor for u, v >= 0
    return in_image, in_image & masks[torch.arange(V)[:, None], row, col]


def pixel_footprint(cameras: Cameras, vertices: torch.Tensor) -> float:
    """Metres one pixel spans at the mesh's centre, mean over the cameras: distance / focal length."""
    distance = (cameras.centers.to(vertices) - vertices.mean(0)).norm(dim=-1)
    return float((distance / cameras.K[:, 0, 0].to(vertices)).mean())


def hull_voxel(cfg: OffMeshConfig, cameras: Cameras, vertices: torch.Tensor) -> float:
    """The hull's voxel side: ``cfg.hull_voxel`` metres, or ``cfg.hull_voxel_pixels`` pixels if larger.

    4 mm was chosen on the synthetic rig at 128 px (README: finer voxels fitted held-out views worse), where a
    pixel spans 3.2 mm at the head: 1.2 pixels reproduces it there. At 64 px the same 4 mm put ~30k seeds on a
    head ~60 px tall, 40% of all the Gaussians, for detail the images do not resolve; counting in pixels keeps
    the seeds as dense in the image at every resolution (issue 20: fewer Gaussians, faster fit)."""
    voxel = cfg.hull_voxel
    if cfg.hull_voxel_pixels is not None:
        voxel = max(voxel, cfg.hull_voxel_pixels * pixel_footprint(cameras, vertices))
    return voxel


def hull_points(masks: torch.Tensor, cameras: Cameras, vertices: torch.Tensor, cfg: OffMeshConfig = OffMeshConfig()):
    """Shell voxels of the visual hull (module docstring, step 4): ``points (M, 3)``, ``observed (M, V)``
    (inside image and mask) and ``pixels (M, V, 2)``.

    masks: ``(V, H, W)`` bool foreground of the V cameras; vertices: ``(N, 3)`` the mesh of the same frame
    (its bounding box, grown by ``cfg.hull_margin``, is carved).
    """
    if cfg.hull_voxel is None or cfg.hull_voxel <= 0:
        raise Morph4DError(f"hull_voxel must be a positive size in metres, got {cfg.hull_voxel}")
    if masks.dim() != 3 or masks.shape[0] != len(cameras):
        raise Morph4DError(f"masks must be (V, H, W) for the {len(cameras)} cameras, got {tuple(masks.shape)}")
    if cfg.mask_dilate > 0:
        k = 2 * cfg.mask_dilate + 1
        masks = torch.nn.functional.max_pool2d(masks[:, None].float(), k, 1, cfg.mask_dilate)[:, 0] > 0.5
    lo, hi = vertices.amin(0) - cfg.hull_margin, vertices.amax(0) + cfg.hull_margin
    voxel = hull_voxel(cfg, cameras, vertices)
    axes = [torch.arange(float(a), float(b), voxel) + voxel / 2 for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (X, Y, Z, 3) voxel centres
    inside = torch.ones(grid.shape[:3], dtype=torch.bool)
    flat = grid.reshape(-1, 3).to(cameras.R)
    for v in range(len(cameras)):  # carve: in view v's image but outside its mask
        in_image, in_mask = _lookup(masks[v:v + 1], cameras[[v]].project(flat))
        inside &= ~(in_image & ~in_mask)[0].reshape(inside.shape)
    # Shell: inside voxels with a carved 6-neighbour (outside the grid counts as inside, so the bounding
    # box's faces, which no view carved, are not a shell).
    p = torch.nn.functional.pad(inside[None, None].float(), (1, 1, 1, 1, 1, 1), value=1.0)[0, 0] > 0.5
    all_inside = inside & p[2:, 1:-1, 1:-1] & p[:-2, 1:-1, 1:-1] & p[1:-1, 2:, 1:-1] & p[1:-1, :-2, 1:-1] \
        & p[1:-1, 1:-1, 2:] & p[1:-1, 1:-1, :-2]
    points = grid[inside & ~all_inside].to(cameras.R)  # (M, 3)
    proj = cameras.project(points)  # (V, M, 3)
    _, observed = _lookup(masks, proj)
    return points, observed.T.contiguous(), proj[..., :2].transpose(0, 1).contiguous()


def offmesh_gaussians(images: torch.Tensor, cameras: Cameras, vertices: torch.Tensor, faces: torch.Tensor,
                      cfg: OffMeshConfig = OffMeshConfig(), sh_degree: int = 3,
                      masks: torch.Tensor | None = None) -> BoundGaussians:
    """Off-mesh Gaussians (module docstring) from first frames ``images (V, 3, H, W)``, bound to the mesh
    ``vertices (N, 3)`` of that frame; with foreground ``masks (V, H, W)`` bool and ``cfg.hull_voxel``,
    also the visual hull's shell (step 4)."""
    observed, pixels = match_tracks(images, cameras, cfg)
    enough = observed.sum(-1) >= cfg.min_views
    observed, pixels = observed[enough], pixels[enough]
    points = triangulate(cameras, observed, pixels) if len(observed) else torch.zeros(0, 3)
    good = reprojection_error(cameras, points, observed, pixels) < cfg.max_error_px if len(points) else enough[:0]
    points, observed, pixels = points[good], observed[good], pixels[good]
    if masks is not None and cfg.hull_voxel is not None:
        hull, hull_observed, hull_pixels = hull_points(masks, cameras, vertices, cfg)
        points, observed, pixels = (torch.cat([a, b.to(a)]) for a, b in
                                    ((points, hull), (observed, hull_observed), (pixels, hull_pixels)))
    binding, local, dist = bind_points(points, vertices, faces)
    off = dist > cfg.min_offset
    points, observed, pixels, binding, local = points[off], observed[off], pixels[off], binding[off], local[off]
    # One Gaussian per voxel (the first track in it).
    cells = torch.floor(points / cfg.voxel).to(torch.int64)
    _, inverse = torch.unique(cells, dim=0, return_inverse=True) if len(cells) else (None, torch.zeros(0, dtype=torch.int64))
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(inverse), dtype=torch.int64)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), "amin")
    observed, pixels, binding, local = observed[first], pixels[first], binding[first], local[first]
    # Colour: mean of the observed pixels (nearest pixel).
    V, _, H, W = images.shape
    col = pixels[..., 0].floor().long().clamp(0, W - 1)
    row = pixels[..., 1].floor().long().clamp(0, H - 1)
    rgb = images[torch.arange(V)[None].expand_as(col), :, row, col]  # (M, V, 3)
    rgb = (rgb * observed[..., None]).sum(1) / observed.sum(1, keepdim=True).clamp(min=1)
    g = BoundGaussians.one_per_triangle(binding, sh_degree=sh_degree, opacity=cfg.opacity)
    k = triangle_frames(vertices, faces)[1][binding]
    g.local_means = local.to(g.local_means)
    g.log_scales = torch.log(cfg.scale / k)[:, None].expand(-1, 3).contiguous().to(g.log_scales)
    g.sh[:, 0] = rgb_to_sh(rgb.to(g.sh))
    return g


__all__ = ["OffMeshConfig", "hull_points", "hull_voxel", "pixel_footprint", "match_tracks", "triangulate",
           "reprojection_error", "bind_points",
           "offmesh_gaussians", "fundamental"]
