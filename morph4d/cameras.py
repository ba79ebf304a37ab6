"""Cameras for the whole project: one convention, MVP4D's view sets and its head crops.

Conventions (written once here; other conventions are converted only in ``from_opengl``/``to_opengl``):

- Extrinsics are OpenCV world-to-camera: ``x_cam = R @ x_world + t``. The camera looks along +z_cam,
  x_cam points right and y_cam down in the image. The camera centre is ``C = -R^T t``.
- Intrinsics are in pixels: ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; ``u = fx x/z + cx``,
  ``v = fy y/z + cy``.
- Pixel centres: pixel (row i, col j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``; an image covers
  ``[0, W] x [0, H]`` and a centred camera has ``(cx, cy) = (W/2, H/2)``. Resizing an image by s scales
  fx, fy, cx, cy by s exactly; cropping a box that starts at (u0, v0) subtracts (u0, v0) from (cx, cy).
- World (head) frame: metres, right-handed, +y up, +z out of the face (the head looks along +z), +x
  towards the subject's left (FLAME's frame). The head sits near the origin.
- Angles in the public API are degrees (azimuth, elevation, field of view). Azimuth 0 puts the camera
  on +z in front of the face; positive azimuth moves it towards +x; positive elevation puts it above
  the head, looking down. The unit view direction (head centre -> camera) of (azimuth a, elevation e)
  is ``(cos e sin a, sin e, cos e cos a)``.
- Every tensor has a leading batch dim B: one camera per batch item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F

from morph4d.errors import Morph4DError


def _check_shape(name: str, x, shape: tuple, expected: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a tensor of ``shape`` (``None`` = any size)."""
    if not isinstance(x, torch.Tensor):
        raise Morph4DError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        raise Morph4DError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def _intrinsics(fx, fy, cx, cy) -> torch.Tensor:
    """``(B,)`` focal lengths and principal points -> ``(B, 3, 3)`` pixel intrinsics."""
    K = torch.zeros(*fx.shape, 3, 3, dtype=fx.dtype, device=fx.device)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = fx, fy, cx, cy, 1.0
    return K


@dataclass
class Cameras:
    """B pinhole cameras sharing one image size (conventions in the module docstring).

    R: (B, 3, 3) world-to-camera rotations
    t: (B, 3) world-to-camera translations
    K: (B, 3, 3) pixel intrinsics
    width, height: image size in pixels
    """

    R: torch.Tensor
    t: torch.Tensor
    K: torch.Tensor
    width: int
    height: int

    def __post_init__(self):
        _check_shape("Cameras.R", self.R, (None, 3, 3), "(B, 3, 3)")
        B = self.R.shape[0]
        _check_shape("Cameras.t", self.t, (B, 3), f"(B, 3) with B = {B}")
        _check_shape("Cameras.K", self.K, (B, 3, 3), f"(B, 3, 3) with B = {B}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise Morph4DError(f"Cameras.{name} must be a positive int, got {value!r}")

    def __len__(self) -> int:
        return self.R.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        """Select cameras by int, slice, index list/tensor or bool mask; the batch dim is kept."""
        if isinstance(idx, int) or (isinstance(idx, torch.Tensor) and idx.dim() == 0):
            idx = [int(idx)]
        return Cameras(self.R[idx], self.t[idx], self.K[idx], self.width, self.height)

    def to(self, *args, **kwargs) -> "Cameras":
        return Cameras(self.R.to(*args, **kwargs), self.t.to(*args, **kwargs), self.K.to(*args, **kwargs),
                       self.width, self.height)

    @property
    def centers(self) -> torch.Tensor:
        """World-space camera centres ``C = -R^T t``, ``(B, 3)``."""
        return -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]

    def _batched(self, x: torch.Tensor, name: str, last: int) -> torch.Tensor:
        """``(N, last)`` (shared by all cameras) or ``(B, N, last)`` -> ``(B, N, last)``."""
        B = len(self)
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            x = x.expand(B, *x.shape)
        _check_shape(name, x, (B, None, last), f"(N, {last}) or (B, N, {last}) with B = {B}")
        return x

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` or ``(B, N, 3)`` -> camera-frame points ``(B, N, 3)``."""
        points = self._batched(points, "points", 3)
        return points @ self.R.transpose(-1, -2) + self.t[:, None]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` or ``(B, N, 3)`` -> ``(B, N, 3)`` as (u, v, z_cam) in pixels.

        No clipping: u, v are meaningless where z_cam <= 0 (behind the camera); callers check z.
        """
        x = self.world_to_camera(points)
        uvw = x @ self.K.transpose(-1, -2)  # (B, N, 3) = (z u, z v, z)
        return torch.cat([uvw[..., :2] / x[..., 2:], x[..., 2:]], dim=-1)

    def unproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, N, 2)`` at camera depth z_cam ``(B, N)`` -> world points ``(B, N, 3)``.

        The inverse of ``project``: ``unproject(p[..., :2], p[..., 2])`` returns the projected points.
        """
        B = len(self)
        _check_shape("uv", uv, (B, None, 2), f"(B, N, 2) with B = {B}")
        _check_shape("depth", depth, uv.shape[:2], f"(B, N) = {tuple(uv.shape[:2])}")
        pixels = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)  # (B, N, 3)
        x_cam = pixels @ torch.linalg.inv(self.K).transpose(-1, -2) * depth[..., None]
        return (x_cam - self.t[:, None]) @ self.R  # R^T (x_cam - t), row-vector form

    def pixel_rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through every pixel centre (MVP4D §3.2 view ray maps, before the change
        to the reference camera's frame).

        Returns origins ``(B, 3)`` (the camera centres) and unit directions ``(B, H, W, 3)``.
        """
        kw = dict(dtype=self.K.dtype, device=self.K.device)
        v, u = torch.meshgrid(torch.arange(self.height, **kw) + 0.5, torch.arange(self.width, **kw) + 0.5,
                              indexing="ij")  # (H, W) each
        pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(1, -1, 3)  # (1, H*W, 3)
        d_cam = pixels @ torch.linalg.inv(self.K).transpose(-1, -2)  # (B, H*W, 3)
        d_world = F.normalize(d_cam @ self.R, dim=-1)  # R^T d_cam
        return self.centers, d_world.reshape(len(self), self.height, self.width, 3)

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for the image resized to ``width x height`` (rows of K scaled exactly)."""
        scale = self.K.new_tensor([width / self.width, height / self.height, 1.0])
        return Cameras(self.R, self.t, scale[:, None] * self.K, width, height)

    def cropped(self, boxes: torch.Tensor, out_size: int) -> "Cameras":
        """The cameras of square ``out_size`` crops (MVP4D §S2.1 head crop).

        boxes: ``(B, 4)`` as (u0, v0, size_u, size_v) in pixels of this image; the crop maps
        ``[u0, u0 + size_u] x [v0, v0 + size_v]`` onto ``[0, out_size]^2`` (so a crop pixel centre
        ``j + 0.5`` samples ``u0 + (j + 0.5) size_u / out_size``; ``outcrop_mask`` uses the same map).
        """
        B = len(self)
        _check_shape("boxes", boxes, (B, 4), f"(B, 4) = (u0, v0, size_u, size_v) with B = {B}")
        u0, v0, su, sv = boxes.to(self.K).unbind(-1)
        A = _intrinsics(out_size / su, out_size / sv, -u0 * out_size / su, -v0 * out_size / sv)
        return Cameras(self.R, self.t, A @ self.K, out_size, out_size)

    @staticmethod
    def cat(cameras: list["Cameras"]) -> "Cameras":
        """Concatenate batches of cameras that share one image size."""
        if not cameras:
            raise Morph4DError("Cameras.cat needs at least one Cameras")
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) > 1:
            raise Morph4DError(f"Cameras.cat needs one image size, got (width, height) in {sorted(sizes)}")
        return Cameras(torch.cat([c.R for c in cameras]), torch.cat([c.t for c in cameras]),
                       torch.cat([c.K for c in cameras]), cameras[0].width, cameras[0].height)


def intrinsics_from_fov(fov_deg: float, width: int, height: int, dtype=torch.float32) -> torch.Tensor:
    """Centred pixel intrinsics ``(3, 3)`` with square pixels; ``fov_deg`` is the VERTICAL field of view."""
    f = torch.tensor([(height / 2) / math.tan(math.radians(fov_deg) / 2)], dtype=dtype)
    return _intrinsics(f, f, torch.full_like(f, width / 2), torch.full_like(f, height / 2))[0]


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None):
    """OpenCV world-to-camera ``(R (B, 3, 3), t (B, 3))`` of cameras at ``eye`` looking at ``target``.

    eye, target, up: ``(B, 3)``; ``up`` (default world +y) appears as image up (-y_cam). A camera
    looking along +-up has no defined roll; there ``up`` is replaced by ``sign(forward . up) * z``
    (``y`` when ``up`` is along z): for the default up this is the limit of an orbit camera reaching
    the pole from azimuth 0 (straight above: the back of the head at the image top).
    """
    _check_shape("eye", eye, (None, 3), "(B, 3)")
    B = eye.shape[0]
    _check_shape("target", target, (B, 3), f"(B, 3) with B = {B}")
    up = eye.new_tensor([0.0, 1.0, 0.0]).expand(B, 3) if up is None else up
    _check_shape("up", up, (B, 3), f"(B, 3) with B = {B}")
    forward = F.normalize(target - eye, dim=-1)
    up = F.normalize(up, dim=-1)
    degenerate = torch.linalg.cross(forward, up).norm(dim=-1) < 1e-6  # (B,) sin(angle) ~ 0
    if degenerate.any():
        z, y = eye.new_tensor([0.0, 0.0, 1.0]), eye.new_tensor([0.0, 1.0, 0.0])
        axis = torch.where((up[:, 2].abs() < 0.9)[:, None], z, y)  # any axis clearly off ``up``
        fallback = torch.sign((forward * up).sum(-1, keepdim=True)) * axis
        up = torch.where(degenerate[:, None], fallback, up)
    right = F.normalize(torch.linalg.cross(forward, up), dim=-1)  # x_cam
    down = torch.linalg.cross(forward, right)  # y_cam = z_cam x x_cam
    R = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coordinates
    return R, -(R @ eye[..., None])[..., 0]


def view_directions(azimuth_deg, elevation_deg) -> torch.Tensor:
    """Unit directions from the head centre to cameras at (azimuth, elevation) degrees, ``(..., 3)``."""
    az, el = torch.deg2rad(torch.as_tensor(azimuth_deg)), torch.deg2rad(torch.as_tensor(elevation_deg))
    az, el = torch.broadcast_tensors(az, el)
    return torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], dim=-1)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between unit vectors (atan2 form: accurate near 0 and 180 degrees)."""
    a, b = torch.broadcast_tensors(a, b)
    return torch.rad2deg(torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1)))


def centre_angles(cameras: "Cameras", point: torch.Tensor | None = None) -> torch.Tensor:
    """Angles in degrees between the directions from ``point`` (default the world origin) to every pair of
    camera centres: ``(B, B)``."""
    c = cameras.centers.double() - (0 if point is None else point.double())
    d = c / c.norm(dim=-1, keepdim=True)
    return _angle(d[:, None], d[None, :])


def angular_distance(az1, el1, az2, el2) -> torch.Tensor:
    """Great-circle angle in degrees between the view directions of two (azimuth, elevation) views.

    Inputs broadcast. Used for MVP4D's clusters (§4) and its angle-dependent guidance scale.
    """
    return _angle(view_directions(az1, el1), view_directions(az2, el2))


# Head framing, named once: every view of a head-model head (generated views, demo orbit, avatar renders,
# conditioning previews) sits VIEW_RADIUS from its look-at point with a VIEW_FOV vertical field of view, at
# which the head fills ~80% of the frame. Generated views (``ViewSet.cameras``) look at the head model's
# origin, the demo's and the avatar renders' orbits at HEAD_CENTRE.
HEAD_CENTRE = (0.0, -0.01, 0.0)  # look-at point between the ears, about nose height (m)
VIEW_RADIUS = 0.75               # camera distance (m)
VIEW_FOV = 26.0                  # vertical field of view (deg)


def orbit_cameras(azimuth_deg, elevation_deg, radius, fov_deg: float, width: int, height: int,
                  target=(0.0, 0.0, 0.0), dtype=torch.float32) -> Cameras:
    """B cameras on a sphere of ``radius`` metres around ``target``, looking at it.

    azimuth_deg, elevation_deg: ``(B,)``; radius: float or ``(B,)``; fov_deg: vertical field of view.
    Image up is the direction of increasing elevation, i.e. world up seen from the camera; at the
    poles it follows the azimuth (at elevation +90 and azimuth 0 the face is at the image bottom).
    """
    azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float64)
    elevation_deg = torch.as_tensor(elevation_deg, dtype=torch.float64)
    _check_shape("azimuth_deg", azimuth_deg, (None,), "(B,)")
    B = azimuth_deg.shape[0]
    _check_shape("elevation_deg", elevation_deg, (B,), f"(B,) with B = {B}")
    radius = torch.as_tensor(radius, dtype=torch.float64).expand(B)
    target = torch.as_tensor(target, dtype=torch.float64).expand(B, 3)
    eye = target + radius[:, None] * view_directions(azimuth_deg, elevation_deg)
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    up = torch.stack([-el.sin() * az.sin(), el.cos(), -el.sin() * az.cos()], dim=-1)  # d(direction)/d(el)
    R, t = look_at(eye, target, up)
    K = intrinsics_from_fov(fov_deg, width, height, dtype).expand(B, 3, 3)
    return Cameras(R.to(dtype), t.to(dtype), K.clone(), width, height)


_GL_FROM_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # flips y and z camera axes (self-inverse)


def from_opengl(c2w_gl: torch.Tensor, fx, fy, cx, cy, width: int, height: int) -> Cameras:
    """OpenGL/Blender/NeRF camera-to-world matrices (camera x right, y up, looking along -z) -> ours.

    c2w_gl: ``(B, 4, 4)``; fx, fy, cx, cy: floats or ``(B,)`` pixel intrinsics in OUR pixel-centre
    convention (add 0.5 to a principal point given with pixel centres at integers).
    """
    _check_shape("c2w_gl", c2w_gl, (None, 4, 4), "(B, 4, 4)")
    B, kw = c2w_gl.shape[0], dict(dtype=c2w_gl.dtype, device=c2w_gl.device)
    R = (c2w_gl[:, :3, :3] @ _GL_FROM_CV.to(**kw)).transpose(-1, -2)  # world-to-camera rotation
    t = -(R @ c2w_gl[:, :3, 3:])[..., 0]
    fx, fy, cx, cy = (torch.as_tensor(v, **kw).expand(B) for v in (fx, fy, cx, cy))
    return Cameras(R, t, _intrinsics(fx, fy, cx, cy), width, height)


def to_opengl(cameras: Cameras) -> torch.Tensor:
    """Our cameras -> OpenGL camera-to-world matrices ``(B, 4, 4)`` (inverse of ``from_opengl``)."""
    c2w = torch.eye(4, dtype=cameras.R.dtype, device=cameras.R.device).repeat(len(cameras), 1, 1)
    c2w[:, :3, :3] = cameras.R.transpose(-1, -2) @ _GL_FROM_CV.to(cameras.R)
    c2w[:, :3, 3] = cameras.centers
    return c2w


# ---------------------------------------------------------------------------------------------------
# MVP4D view sets (§4 "Sampling", Fig. S10). The paper gives counts and ranges, not the angles; ours:
#
# "120" (32 views): the 24 other views form a 6 x 4 grid, azimuth -60..60 in steps of 24, elevation
#   -15..15 in steps of 10. The 8 key views sit at grid-cell centres in a quincunx (a lattice, so
#   "uniform"): (+-48, +-10), (0, +-10), (+-24, 0). Every view is 10-13 degrees from its nearest
#   neighbour; each cluster comes out as a 2 x 2 grid cell around one of the six outer keys.
# "360" (48 views): key views in two rings of 4, offset by 45 degrees: elevation -10 at azimuth
#   0, 90, 180, -90 and elevation 45 at +-45, +-135. These elevations minimise the largest angle from
#   any direction of the -30..90 cap to its nearest key (46 degrees; chosen by a grid search). The 40
#   others: rings of 8 at elevations -30, -10, 10, 35 and azimuths +-22.5, +-67.5, +-112.5, +-157.5
#   (halfway between the keys), a ring of 7 at elevation 65 (azimuth 0, +-360/7, +-720/7, +-1080/7:
#   a 7-ring plus the pole fill two clusters; listed from the front, so that the clustering's tie
#   between the 7 equally placed seeds gives the mirror-symmetric split "pole + 3 front, 4 back") and
#   the pole (elevation 90; its azimuth 0 only sets the image roll). Nearest-neighbour angles: 20-25.
# Views are listed keys first, then the others row by row from the top.
# ---------------------------------------------------------------------------------------------------


def _rings(rings: list[tuple[float, list[float]]]) -> list[tuple[float, float]]:
    return [(az, el) for el, azimuths in rings for az in azimuths]


_VIEW_TABLES = {  # name -> (key views, other views) as (azimuth, elevation) degrees
    # "small": our CPU preset (not in the paper): 4 keys around a frontal cross, 4 others between them,
    # so the sampling plan has one key job and one cluster of 4 with its 4 nearest keys.
    "small": (
        _rings([(0.0, [-40.0, 40.0]), (20.0, [0.0]), (-20.0, [0.0])]),
        _rings([(10.0, [-20.0, 20.0]), (-10.0, [-20.0, 20.0])]),
    ),
    "120": (
        _rings([(10.0, [-48.0, 0.0, 48.0]), (0.0, [-24.0, 24.0]), (-10.0, [-48.0, 0.0, 48.0])]),
        _rings([(el, [-60.0, -36.0, -12.0, 12.0, 36.0, 60.0]) for el in (15.0, 5.0, -5.0, -15.0)]),
    ),
    "360": (
        _rings([(-10.0, [0.0, 90.0, 180.0, -90.0]), (45.0, [45.0, 135.0, -135.0, -45.0])]),
        _rings([(90.0, [0.0]), (65.0, [k * 360.0 / 7 for k in (0, 1, -1, 2, -2, 3, -3)])]
               + [(el, [-157.5, -112.5, -67.5, -22.5, 22.5, 67.5, 112.5, 157.5])
                  for el in (35.0, 10.0, -10.0, -30.0)]),
    ),
}
VIEW_SETS = tuple(_VIEW_TABLES)  # the names ``view_set`` knows


def _round(x: torch.Tensor) -> list[float]:
    """Angles rounded to 1e-6 degrees, so that ties of symmetric layouts break by index, not by noise."""
    return [round(v, 6) for v in x.tolist()]


def _cluster_views(dirs: torch.Tensor, size: int = 4, candidates: int = 7) -> list[list[int]]:
    """Group ``(M, 3)`` unit view directions into clusters of ``size`` neighbours (MVP4D §4).

    Deterministic greedy, until every view is assigned:
    1. seed = the unassigned view farthest from the mean direction of the unassigned views (the
       periphery first, so that the last clusters are not scattered leftovers);
    2. from the seed's ``candidates`` nearest unassigned views take the ``size - 1`` that minimise the
       cluster's largest pairwise angle, then the summed angle to the seed (7 candidates, 35 triples:
       enough to hold every grid cell or ring arc that contains the seed in our view tables).
    """
    angles = _angle(dirs[:, None], dirs[None])  # (M, M) degrees
    unassigned, clusters = list(range(dirs.shape[0])), []
    while unassigned:
        mean = F.normalize(dirs[unassigned].mean(0), dim=0)
        from_mean = _round(_angle(dirs[unassigned], mean))
        seed = unassigned[from_mean.index(max(from_mean))]
        near = sorted((i for i in unassigned if i != seed),
                      key=lambda i: (round(angles[seed, i].item(), 6), i))

        def spread(group):
            members = (seed, *group)
            return (round(max(angles[a, b].item() for a, b in combinations(members, 2)), 6),
                    round(sum(angles[seed, i].item() for i in group), 6))

        cluster = sorted((seed, *min(combinations(near[:candidates], size - 1), key=spread)))
        clusters.append(cluster)
        unassigned = [i for i in unassigned if i not in cluster]
    return clusters


@dataclass
class ViewSet:
    """The camera views of one MVP4D avatar (§4 "Sampling", Fig. S10); V views, indices into them.

    azimuth, elevation: (V,) degrees
    key: (V,) bool, True for the 8 key views (generated first, mode 1)
    clusters: the other views in groups of 4 neighbours (each generated jointly, mode 2)
    cluster_keys: per cluster, the 4 key views nearest its centre, nearest first (its references)
    """

    azimuth: torch.Tensor
    elevation: torch.Tensor
    key: torch.Tensor
    clusters: list[list[int]]
    cluster_keys: list[list[int]]

    def cameras(self, radius: float, fov_deg: float, width: int, height: int,
                dtype=torch.float32) -> Cameras:
        """One orbit camera per view, looking at the head centre (the origin)."""
        return orbit_cameras(self.azimuth, self.elevation, radius, fov_deg, width, height, dtype=dtype)


def view_set(name: str) -> ViewSet:
    """MVP4D's view set ``"120"`` (32 views) or ``"360"`` (48 views), or our CPU set ``"small"`` (8 views)."""
    if name not in _VIEW_TABLES:
        raise Morph4DError(f"unknown view set {name!r}; valid names: {sorted(_VIEW_TABLES)}")
    keys, others = _VIEW_TABLES[name]
    azimuth, elevation = torch.tensor(keys + others, dtype=torch.float64).T
    is_key = torch.arange(len(keys) + len(others)) < len(keys)
    dirs = view_directions(azimuth, elevation)  # (V, 3), float64 for stable ties
    other_index, key_index = (~is_key).nonzero()[:, 0].tolist(), is_key.nonzero()[:, 0].tolist()
    clusters = [[other_index[i] for i in c] for c in _cluster_views(dirs[other_index])]
    cluster_keys = []
    for cluster in clusters:
        centre = F.normalize(dirs[cluster].mean(0), dim=0)
        to_keys = _round(_angle(dirs[key_index], centre))
        nearest = sorted(range(len(key_index)), key=lambda k: (to_keys[k], k))[:4]
        cluster_keys.append([key_index[k] for k in nearest])
    return ViewSet(azimuth.float(), elevation.float(), is_key, clusters, cluster_keys)


# ---------------------------------------------------------------------------------------------------
# Head crops (MVP4D §S2.1 "Increased face bounding box", following CAP4D).
# ---------------------------------------------------------------------------------------------------


def _gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter ``(F, C)`` along frames, edge-replicate padding, kernel radius ``int(4 sigma + 0.5)``.

    The same filter as ``scipy.ndimage.gaussian_filter1d(x, sigma, axis=0, mode="nearest")``.
    Replicate (not reflect) padding works for any frame count and keeps a constant track constant.
    """
    radius = int(4 * sigma + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (k / sigma) ** 2)
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, -1)  # (C, 1, 2r+1)
    padded = F.pad(x.T[None], (radius, radius), mode="replicate")  # (1, C, F + 2r)
    return F.conv1d(padded, kernel, groups=x.shape[1])[0].T


def head_crop_boxes(points_2d: torch.Tensor, scale: float = 1.25, smooth_sigma: float | None = None
                    ) -> torch.Tensor:
    """Square head crops per frame (MVP4D §S2.1): ``(F, N, 2)`` projected head vertices -> ``(F, 4)``.

    Each box is (u0, v0, size, size), centred on the tight 2D box of the vertices, with side
    ``scale * max(tight width, tight height)`` (MVP4D: 25% larger, CAP4D used 20%). With
    ``smooth_sigma`` (frames; None or 0 = off) the box centre and side are smoothed over frames by a
    Gaussian filter (``_gaussian_smooth``) against jitter. Crop with ``Cameras.cropped``.
    """
    _check_shape("points_2d", points_2d, (None, None, 2), "(F, N, 2)")
    lo, hi = points_2d.amin(dim=1), points_2d.amax(dim=1)  # (F, 2)
    track = torch.cat([(lo + hi) / 2, scale * (hi - lo).amax(dim=-1, keepdim=True)], dim=-1)  # (F, 3)
    if smooth_sigma:
        track = _gaussian_smooth(track, smooth_sigma)
    centre, side = track[:, :2], track[:, 2:]
    return torch.cat([centre - side / 2, side, side], dim=-1)


def outcrop_mask(boxes: torch.Tensor, image_width: int, image_height: int, out_size: int) -> torch.Tensor:
    """CAP4D/MVP4D outcropping mask ``(B, out_size, out_size)``: 1 where the crop pixel lies outside
    the photo.

    boxes: ``(B, 4)`` as in ``Cameras.cropped``. A crop pixel counts as outside when its centre,
    mapped back into the photo, falls outside ``[0, W] x [0, H]`` (a centre on the border is inside).
    """
    _check_shape("boxes", boxes, (None, 4), "(B, 4) = (u0, v0, size_u, size_v)")
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    u0, v0, su, sv = boxes.unbind(-1)
    c = (torch.arange(out_size, dtype=boxes.dtype, device=boxes.device) + 0.5) / out_size  # (S,)
    u = u0[:, None] + c * su[:, None]  # (B, S) columns
    v = v0[:, None] + c * sv[:, None]  # (B, S) rows
    outside_u = (u < 0) | (u > image_width)
    outside_v = (v < 0) | (v > image_height)
    return (outside_v[:, :, None] | outside_u[:, None, :]).to(boxes.dtype)
