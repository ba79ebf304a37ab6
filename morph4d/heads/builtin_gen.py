"""Generator of morph4d's built-in, license-free head model (``morph4d/assets/builtin_head.npz``).

Run ``python -m morph4d.heads.builtin_gen`` to regenerate the shipped file; the output is a pure
function of the code below (no randomness), and a test checks the shipped file against it.

How the head is made
1. **Sculpt.** A signed distance field (SDF) built from smooth unions of ellipsoids and capsules: cranium,
   midface, jaw and chin, cheekbones, brow ridge, nose, lips, ears, neck; eye sockets carved out.
   Sizes follow adult head proportions in metres (about 15 cm wide, 20 cm deep, 23 cm crown to chin).
2. **Mesh.** A fixed grid of rays from a point inside the head (rows = polar angle from the crown, columns =
   azimuth, denser over the face) is intersected with the SDF from outside in, so every identity has the
   same topology and vertex k always sits on the same ray. The grid is closed with a pole vertex at the
   crown and at the bottom of the neck.
3. **Openings.** The mouth and each eye are *cuts* along one grid row: the row's interior vertices are
   duplicated, the quads above use the originals (upper lip / upper lid) and the quads below the copies
   (lower lip / lower lid). Lips meet at rest and part when the jaw joint rotates; eyelids are opened by
   a displacement and wrap the eyeballs.
4. **Extra parts.** Eyeballs (pole at the front, so iris and pupil are exact rings), a mouth cavity,
   upper and lower teeth and a tongue.
5. **Rig.** FLAME's 5 joints (global, neck, jaw, eyes); joints are regressed from fixed vertex sets, so they
   follow the shape; skinning weights are smooth functions of the rest geometry.
6. **Bases.** Shape components are central differences of the whole generator with respect to sculpt
   parameters (one standard deviation each); expression components are differences of the generator with
   one expression "dial" turned (eyelids re-opened/closed, local displacement fields around the mouth,
   cheeks, brows and nose). Both are therefore linear blendshapes with FLAME's semantics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from morph4d.errors import Morph4DError

# --------------------------------------------------------------------------------------------------
# 1. sculpt parameters and the signed distance field
# --------------------------------------------------------------------------------------------------

# (name, relative step of one standard deviation). Each scales one group of primitives in `head_sdf`.
SHAPE_COMPONENTS = (
    ("head_width", 0.05), ("head_depth", 0.05), ("head_height", 0.05), ("face_length", 0.06),
    ("jaw_width", 0.08), ("chin_forward", 0.006), ("nose_length", 0.006), ("nose_width", 0.12),
    ("cheekbones", 0.25), ("eye_spacing", 0.06), ("brow_ridge", 0.3), ("lip_fullness", 0.18),
    ("ear_size", 0.1), ("neck_thickness", 0.08),
)

EXPRESSION_COMPONENTS = (
    "smile", "frown", "mouth_stretch", "pucker", "lip_funnel", "mouth_left", "mouth_right",
    "upper_lip_raise", "lower_lip_depress", "lip_press", "cheek_puff", "cheek_raise", "brow_raise",
    "brow_inner_up", "brow_lower", "blink_left", "blink_right", "eyes_wide", "squint", "nose_wrinkle",
    "sneer_left", "sneer_right", "smile_left", "smile_right",
)

EYE_Y = 0.030          # eye centre height (m); the crown is at about +0.12, the chin at -0.105
MOUTH_Y = -0.047       # height of the line where the lips meet
EYE_X = 0.032          # half the distance between the pupils (adult mean interpupillary ~64 mm)
EYEBALL_R = 0.0120     # adult eyeball radius ~12 mm
RAY_ORIGIN = np.array([0.0, -0.005, 0.0])


@dataclass(frozen=True)
class Sculpt:
    """Shape dials, 0 = the mean head; one unit = one standard deviation (see SHAPE_COMPONENTS)."""
    values: tuple = (0.0,) * len(SHAPE_COMPONENTS)

    def __getattr__(self, name):
        names = [n for n, _ in SHAPE_COMPONENTS]
        if name in names:
            i = names.index(name)
            return self.values[i] * SHAPE_COMPONENTS[i][1]
        raise AttributeError(name)


def _ellipsoid(p, c, r):
    """Approximate SDF of an axis-aligned ellipsoid (exact on the surface, bounded elsewhere)."""
    q = (p - c) / r
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm((p - c) / (np.asarray(r) ** 2), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _capsule(p, a, b, ra, rb):
    """SDF of a capsule from a to b whose radius goes linearly from ra to rb (a rounded cone, approx)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pa, ba = p - a, b - a
    h = np.clip((pa @ ba) / (ba @ ba), 0.0, 1.0)
    return np.linalg.norm(pa - h[:, None] * ba, axis=-1) - (ra + (rb - ra) * h)


def _smin(a, b, k):
    """Polynomial smooth minimum (smooth union) with blend radius k."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _mirror(p):
    """Fold x to |x| so one primitive makes a symmetric pair."""
    q = p.copy()
    q[:, 0] = np.abs(q[:, 0])
    return q


def head_sdf(p: np.ndarray, s: Sculpt) -> np.ndarray:
    """Signed distance (m, negative inside) of the sculpted head at points ``p`` (M, 3)."""
    pm = _mirror(p)
    w, d, h = 1 + s.head_width, 1 + s.head_depth, 1 + s.head_height
    fl, jw = 1 + s.face_length, 1 + s.jaw_width
    # skull: a long ellipsoid plus a fuller occiput
    dist = _ellipsoid(p, [0, 0.030, -0.010], [0.073 * w, 0.094 * h, 0.098 * d])
    dist = _smin(dist, _ellipsoid(p, [0, 0.018, -0.040 * d], [0.074 * w, 0.084 * h, 0.074 * d]), 0.02)
    # midface and maxilla
    dist = _smin(dist, _ellipsoid(p, [0, -0.012, 0.036], [0.063 * w, 0.062, 0.060]), 0.02)
    # cheeks (soft tissue over the maxilla)
    dist = _smin(dist, _ellipsoid(pm, [0.036 * w, -0.028, 0.050], [0.024, 0.022, 0.022]), 0.02)
    # jaw, chin
    dist = _smin(dist, _ellipsoid(p, [0, -0.062 * fl, 0.022], [0.054 * jw * w, 0.040 * fl, 0.060]), 0.025)
    dist = _smin(dist, _ellipsoid(pm, [0.047 * jw * w, -0.066 * fl, -0.002], [0.014, 0.022, 0.022]), 0.02)
    dist = _smin(dist, _ellipsoid(p, [0, -0.093 * fl, 0.074 + s.chin_forward], [0.027, 0.015, 0.016]), 0.02)
    # cheekbones (zygomatic) and brow ridge
    cb = 1 + s.cheekbones
    dist = _smin(dist, _ellipsoid(pm, [0.046 * w, 0.004, 0.058], [0.018 * cb, 0.012 * cb, 0.016 * cb]), 0.018)
    br = 1 + s.brow_ridge
    dist = _smin(dist, _capsule(pm, [0.0, EYE_Y + 0.018, 0.083], [0.044, EYE_Y + 0.016, 0.070],
                                0.0085 * br, 0.0065 * br), 0.015)
    # eye sockets carved out, eyeballs sit in them (the lids are shaped in `open_eyelids`)
    ex = EYE_X * (1 + s.eye_spacing)
    socket = _ellipsoid(pm, [ex, EYE_Y, 0.085], [0.017, 0.011, 0.0085])
    dist = _smax(dist, -socket, 0.006)
    # nose: bridge (rounded cone), tip, wings (alae)
    nl, nw = s.nose_length, 1 + s.nose_width
    tip = np.array([0.0, -0.019 - 0.3 * nl, 0.1055 + nl])
    dist = _smin(dist, _capsule(p, [0, EYE_Y + 0.002, 0.082], tip, 0.0065, 0.0085 * nw), 0.012)
    dist = _smin(dist, _ellipsoid(p, tip + [0, -0.002, -0.002], [0.010 * nw, 0.009, 0.0095]), 0.006)
    dist = _smin(dist, _ellipsoid(pm, [0.0135 * nw, tip[1] - 0.007, tip[2] - 0.016],
                                  [0.0085, 0.0075, 0.009]), 0.006)
    # lips: upper and lower bulges meeting at MOUTH_Y
    lf = 1 + s.lip_fullness
    dist = _smin(dist, _ellipsoid(p, [0, MOUTH_Y + 0.0045, 0.0865], [0.0225, 0.0056, 0.0095 * lf]), 0.008)
    dist = _smin(dist, _ellipsoid(p, [0, MOUTH_Y - 0.0058, 0.0850], [0.0210, 0.0066, 0.0100 * lf]), 0.008)
    # ears: a flattened ellipsoid with the concha carved in
    es = 1 + s.ear_size
    ear = _ellipsoid(pm, [0.074 * w, 0.006, -0.012], [0.012, 0.031 * es, 0.019 * es])
    ear = _smax(ear, -_ellipsoid(pm, [0.086 * w, 0.004, -0.008], [0.006, 0.016 * es, 0.009 * es]), 0.004)
    dist = _smin(dist, ear, 0.006)
    # neck, cut flat at the bottom
    nk = 1 + s.neck_thickness
    dist = _smin(dist, _capsule(p, [0, -0.030, -0.020], [0, -0.30, -0.005], 0.052 * nk, 0.056 * nk), 0.03)
    return np.maximum(dist, -(p[:, 1] + 0.215))


# --------------------------------------------------------------------------------------------------
# 2. the ray grid (topology) and ray casting
# --------------------------------------------------------------------------------------------------

def _samples_from_density(knots_deg, density, n_total):
    """Angles (deg) with a piecewise-constant density between knots, n_total samples incl. both ends."""
    knots = np.asarray(knots_deg, float)
    mass = np.concatenate([[0], np.cumsum(np.diff(knots) * np.asarray(density, float))])
    return np.interp(np.linspace(0, mass[-1], n_total), mass, knots)


def _snap(angles, targets):
    """Move the sample nearest each target angle onto it (so a cut row lies exactly on a feature)."""
    a = angles.copy()
    for t in targets:
        a[np.argmin(np.abs(a - t))] = t
    return a


def _polar_of(y, z):
    """Polar angle (deg, from +y) of the direction from RAY_ORIGIN to a point at height y, depth z."""
    return math.degrees(math.atan2(z - RAY_ORIGIN[2], y - RAY_ORIGIN[1])) if z else 0.0


PHI_EYE = _polar_of(EYE_Y, 0.083)
PHI_MOUTH = _polar_of(MOUTH_Y, 0.095)
# rows: polar angle from the crown; dense from the brows to the chin
PHI = _snap(_samples_from_density([2, 45, 60, 122, 178], [0.45, 1.0, 1.45, 0.55], 133),
            [PHI_EYE, PHI_MOUTH])
# columns: azimuth, 0 = front, +x = subject's left; dense over the face
THETA = _samples_from_density([-180, -120, -60, 60, 120, 180], [0.2, 0.33, 0.72, 0.33, 0.2], 158)[:-1]
ROW_EYE = int(np.argmin(np.abs(PHI - PHI_EYE)))
ROW_MOUTH = int(np.argmin(np.abs(PHI - PHI_MOUTH)))


def _column_range(theta_lo, theta_hi):
    """Grid columns of a cut: (first shared corner, last shared corner), interior columns between them."""
    a = int(np.argmin(np.abs(THETA - theta_lo)))
    b = int(np.argmin(np.abs(THETA - theta_hi)))
    return a, b


def _eye_theta(x):
    return math.degrees(math.atan2(x, 0.083))


MOUTH_COLS = _column_range(-math.degrees(math.atan2(0.0235, 0.086)), math.degrees(math.atan2(0.0235, 0.086)))
EYE_HALF_WIDTH = 0.0135
EYE_COLS = {  # subject's left eye is at +x
    "left": _column_range(_eye_theta(EYE_X - EYE_HALF_WIDTH), _eye_theta(EYE_X + EYE_HALF_WIDTH)),
    "right": _column_range(_eye_theta(-EYE_X - EYE_HALF_WIDTH), _eye_theta(-EYE_X + EYE_HALF_WIDTH)),
}


def ray_directions():
    """Unit ray directions (R, C, 3) of the grid: rows PHI, columns THETA."""
    phi, theta = np.radians(PHI)[:, None], np.radians(THETA)[None, :]
    return np.stack(np.broadcast_arrays(np.sin(phi) * np.sin(theta), np.cos(phi),
                                        np.sin(phi) * np.cos(theta)), axis=-1)


def cast(sdf, dirs, r_max=0.36, iters=16):
    """Outermost intersection of each ray (from RAY_ORIGIN, inwards from ``r_max``) with ``sdf`` = 0.

    Sphere tracing with a safety factor (the ellipsoid and smooth-min distances are approximate), then
    bisection between the last point outside and the first point inside.
    """
    flat = dirs.reshape(-1, 3)
    t_out = np.full(len(flat), r_max)            # last parameter known to be outside
    t_in = np.full(len(flat), np.nan)            # first parameter found inside
    active = np.arange(len(flat))
    for _ in range(400):
        d = sdf(RAY_ORIGIN + t_out[active, None] * flat[active])
        inside = d <= 2e-5
        t_in[active[inside]] = t_out[active[inside]] - np.maximum(d[inside], 0.0)
        active = active[~inside]
        step = np.maximum(0.6 * d[~inside], 1e-4)
        t_next = t_out[active] - step
        probe = sdf(RAY_ORIGIN + t_next[:, None] * flat[active])
        crossed = probe <= 0
        t_in[active[crossed]] = t_next[crossed]
        t_out[active[~crossed]] = t_next[~crossed]
        active = active[~crossed]
        if len(active) == 0:
            break
    if np.isnan(t_in).any() or (t_in <= 0).any():
        raise RuntimeError("a grid ray missed the head surface; the sculpt is not star-shaped enough")
    lo, hi = np.minimum(t_in, t_out), t_out      # sdf(lo) <= 0 < sdf(hi) (up to tolerance)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = sdf(RAY_ORIGIN + mid[:, None] * flat) <= 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return (RAY_ORIGIN + (0.5 * (lo + hi))[:, None] * flat).reshape(dirs.shape)


# --------------------------------------------------------------------------------------------------
# 3. topology: the head grid with its cuts, the extra parts, UVs and vertex groups
# --------------------------------------------------------------------------------------------------

R_, C_ = len(PHI), len(THETA)
EYE_PARTS = dict(rings=18, segments=36)      # eyeball: rings from the front pole to the back pole
CAVITY = dict(rings=10, segments=28)         # mouth cavity: a bowl open towards the lips
TEETH = dict(rows=3, cols=24)                # each tooth row: an open curved strip
TONGUE = dict(rings=8, segments=20)


def _grid_faces(rows, cols, wrap):
    """Quads of a rows x cols vertex grid (row-major) as triangles; outward for (down, right) = (-y, +x)."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    j1 = (j + 1) % cols
    v00, v01, v10, v11 = i * cols + j, i * cols + j1, (i + 1) * cols + j, (i + 1) * cols + j1
    return np.concatenate([np.stack([v00, v10, v01], -1).reshape(-1, 3),
                           np.stack([v01, v10, v11], -1).reshape(-1, 3)])


def _sphere_topology(rings, segments):
    """Closed lat-long sphere: front pole, `rings - 1` rings, back pole. Vertex 0 = front pole."""
    ring_faces = _grid_faces(rings - 1, segments, wrap=True) + 1
    j = np.arange(segments)
    front = np.stack([np.zeros(segments, int), 1 + j, 1 + (j + 1) % segments], -1)
    last = 1 + (rings - 2) * segments
    back_pole = last + segments
    back = np.stack([back_pole + 0 * j, last + (j + 1) % segments, last + j], -1)
    return np.concatenate([front, ring_faces, back])


def _sphere_dirs(rings, segments, polar_max=180.0):
    """Unit directions of the sphere/bowl vertices, pole on +z; also their polar angle from +z (deg)."""
    closed = polar_max == 180.0
    polar = np.linspace(0, polar_max, rings + 1)[1:-1] if closed else np.linspace(0, polar_max, rings)[1:]
    p, a = np.meshgrid(np.radians(polar), np.radians(np.arange(segments) * 360.0 / segments), indexing="ij")
    ring = np.stack([np.sin(p) * np.cos(a), np.sin(p) * np.sin(a), np.cos(p)], -1).reshape(-1, 3)
    dirs = [[[0, 0, 1.0]], ring] + ([[[0, 0, -1.0]]] if closed else [])
    polar_deg = [[0.0], np.degrees(p.ravel())] + ([[180.0]] if closed else [])
    return np.concatenate(dirs), np.concatenate(polar_deg)


@dataclass
class Topology:
    faces: np.ndarray                 # (T, 3)
    uvs: np.ndarray                   # (M, 2)
    uv_faces: np.ndarray              # (T, 3)
    groups: dict = field(default_factory=dict)   # name -> vertex indices
    n_vertices: int = 0
    dup: dict = field(default_factory=dict)       # cut name -> (grid indices of originals, indices of copies)


def _uv_box(uv01, box):
    (u0, v0, u1, v1) = box
    return np.stack([u0 + uv01[:, 0] * (u1 - u0), v0 + uv01[:, 1] * (v1 - v0)], -1)


def build_topology() -> Topology:
    """Faces, UVs and vertex groups of the built-in head (the same for every identity and expression)."""
    faces, uvs, uv_faces, groups = [], [], [], {}
    # 3.1 head grid (R_ x C_), poles, duplicated cut vertices
    n = R_ * C_
    top, bottom = n, n + 1
    n += 2
    cuts = {"mouth": (ROW_MOUTH, *MOUTH_COLS), "eye_left": (ROW_EYE, *EYE_COLS["left"]),
            "eye_right": (ROW_EYE, *EYE_COLS["right"])}
    dup, copy_of = {}, {}
    for name, (row, a, b) in cuts.items():
        orig = row * C_ + np.arange(a + 1, b)
        dup[name] = (orig, n + np.arange(len(orig)))
        copy_of.update(zip(orig.tolist(), dup[name][1].tolist()))
        n += len(orig)
    grid = _grid_faces(R_, C_, wrap=True)
    # a triangle whose top row is a cut row lies below the cut: it uses the copies (lower lip / lid)
    rows_of = grid // C_
    below = rows_of == rows_of.min(axis=1, keepdims=True)
    swap = below & np.isin(grid, list(copy_of))
    grid[swap] = [copy_of[c] for c in grid[swap]]
    j = np.arange(C_)
    top_fan = np.stack([top + 0 * j, j, (j + 1) % C_], -1)
    last = (R_ - 1) * C_
    bottom_fan = np.stack([bottom + 0 * j, last + (j + 1) % C_, last + j], -1)
    head_faces = np.concatenate([top_fan, grid, bottom_fan])
    faces.append(head_faces)
    # head UVs: an extra seam column (u = 1) so the back of the head is not smeared across the map
    u = (np.append(THETA, 180.0) + 180.0) / 360.0
    v = 0.78 * np.asarray(PHI) / 180.0
    gu, gv = np.meshgrid(u, v)
    head_uv = np.stack([gu.ravel(), gv.ravel()], -1)
    head_uv = np.concatenate([head_uv, [[0.5, 0.0], [0.5, 0.78]]])  # poles
    uv_index = np.concatenate([(np.arange(R_)[:, None] * (C_ + 1) + np.arange(C_)[None]).ravel(),
                               [R_ * (C_ + 1), R_ * (C_ + 1) + 1]])
    for name, (orig, copies) in dup.items():
        uv_index = np.concatenate([uv_index, uv_index[orig]])
    head_uv_faces = uv_index[head_faces]
    # faces crossing the seam (column C_-1 -> 0) take the u = 1 copy of column 0
    grid_vertex = head_faces < R_ * C_
    col = np.where(grid_vertex, head_faces % C_, -1)
    seam = (col == 0) & (col.max(axis=1, keepdims=True) == C_ - 1)
    head_uv_faces[seam] = (head_faces[seam] // C_) * (C_ + 1) + C_
    uvs.append(head_uv)
    uv_faces.append(head_uv_faces)
    groups["head"] = np.arange(n)
    offset, uv_offset = n, len(head_uv)

    def add_part(name, part_faces, n_verts, part_uv, box):
        nonlocal offset, uv_offset
        faces.append(part_faces + offset)
        uvs.append(_uv_box(part_uv, box))
        uv_faces.append(part_faces + uv_offset)
        groups[name] = offset + np.arange(n_verts)
        offset += n_verts
        uv_offset += n_verts

    # 3.2 eyeballs, mouth cavity, teeth, tongue (UV islands in the strip v in [0.8, 1])
    sph = _sphere_topology(EYE_PARTS["rings"], EYE_PARTS["segments"])
    d, _ = _sphere_dirs(EYE_PARTS["rings"], EYE_PARTS["segments"])
    disk = 0.5 + 0.5 * d[:, :2]
    add_part("eye_left", sph, len(d), disk, (0.0, 0.8, 0.2, 1.0))
    add_part("eye_right", sph, len(d), disk, (0.2, 0.8, 0.4, 1.0))
    bowl = _sphere_topology_open(CAVITY["rings"], CAVITY["segments"])
    d, _ = _sphere_dirs(CAVITY["rings"], CAVITY["segments"], polar_max=105.0)
    add_part("mouth_cavity", bowl, len(d), 0.5 + 0.5 * d[:, :2], (0.4, 0.8, 0.6, 1.0))
    strip = _grid_faces(TEETH["rows"], TEETH["cols"], wrap=False)
    sr, sc = np.meshgrid(np.linspace(0, 1, TEETH["rows"]), np.linspace(0, 1, TEETH["cols"]), indexing="ij")
    strip_uv = np.stack([sc.ravel(), sr.ravel()], -1)
    add_part("teeth_upper", strip, len(strip_uv), strip_uv, (0.6, 0.8, 0.8, 0.9))
    add_part("teeth_lower", strip, len(strip_uv), strip_uv, (0.6, 0.9, 0.8, 1.0))
    sph = _sphere_topology(TONGUE["rings"], TONGUE["segments"])
    d, _ = _sphere_dirs(TONGUE["rings"], TONGUE["segments"])
    add_part("tongue", sph, len(d), 0.5 + 0.5 * d[:, :2], (0.8, 0.8, 1.0, 1.0))
    groups["mouth_interior"] = np.concatenate([groups[k] for k in
                                               ("mouth_cavity", "teeth_upper", "teeth_lower", "tongue")])
    groups["eyes"] = np.concatenate([groups["eye_left"], groups["eye_right"]])
    return Topology(np.concatenate(faces), np.concatenate(uvs), np.concatenate(uv_faces), groups, offset, dup)


def _sphere_topology_open(rings, segments):
    """A bowl: back pole (vertex 0) and `rings - 1` rings, open at the last ring."""
    ring_faces = _grid_faces(rings - 1, segments, wrap=True) + 1
    j = np.arange(segments)
    pole = np.stack([np.zeros(segments, int), 1 + (j + 1) % segments, 1 + j], -1)
    return np.concatenate([pole, ring_faces])


# --------------------------------------------------------------------------------------------------
# 4. geometry: the head surface with open eyelids, the extra parts, and expression dials
# --------------------------------------------------------------------------------------------------

TOPO = build_topology()
LID_UP, LID_DOWN = 0.0043, 0.0032      # eyelid travel from the closed line (m): ~8 mm palpebral fissure
LID_FALLOFF = (1.0, 0.55, 0.25, 0.08)  # how much of the lid edge's travel rows 0..3 away from the cut follow
EYELID_MARGIN = 0.0009                 # lids rest this far outside the eyeball (m)


def eye_centers(s: Sculpt) -> np.ndarray:
    """Eyeball centres (2, 3): left (+x) then right."""
    ex = EYE_X * (1 + s.eye_spacing)
    return np.array([[ex, EYE_Y, 0.0685], [-ex, EYE_Y, 0.0685]])


def _lid_profile(n):
    """Travel of the interior lid-edge vertices along a cut (0 at the shared corners, 1 mid-way)."""
    t = np.linspace(0, 1, n + 2)[1:-1]
    return np.sin(np.pi * t) ** 0.8


def open_eyelids(v: np.ndarray, s: Sculpt, opening: dict) -> np.ndarray:
    """Open the eye cuts by ``opening[side]`` (1 = rest, 0 = closed) and wrap the lids over the eyeballs."""
    v = v.copy()
    for k, side in enumerate(("left", "right")):
        orig, copies = TOPO.dup[f"eye_{side}"]
        prof = _lid_profile(len(orig))
        a = opening[side]
        for r, fall in enumerate(LID_FALLOFF):  # upper lid: the cut row's originals and the rows above
            v[orig - r * C_, 1] += a * LID_UP * fall * prof
        v[copies, 1] -= a * LID_DOWN * prof     # lower lid: the copies and the rows below
        for r, fall in enumerate(LID_FALLOFF[1:], start=1):
            v[orig + r * C_, 1] -= a * LID_DOWN * fall * prof
        c = eye_centers(s)[k]
        near = np.linalg.norm(v[: R_ * C_ + 2] - c, axis=-1) < EYEBALL_R + 0.004
        idx = np.concatenate([np.flatnonzero(near), copies])
        rel = v[idx] - c
        dist = np.linalg.norm(rel, axis=-1, keepdims=True)
        v[idx] = c + rel / dist * np.maximum(dist, EYEBALL_R + EYELID_MARGIN)
    return v


def _parts(s: Sculpt) -> dict:
    """Rest positions of the eyeballs, mouth cavity, teeth and tongue."""
    out = {}
    d, polar = _sphere_dirs(EYE_PARTS["rings"], EYE_PARTS["segments"])
    cornea = 0.0007 * np.clip(1 - polar / 30.0, 0, 1) ** 0.5  # the cornea bulges over the iris
    for k, side in enumerate(("left", "right")):
        out[f"eye_{side}"] = eye_centers(s)[k] + d * (EYEBALL_R + cornea[:, None])
    d, _ = _sphere_dirs(CAVITY["rings"], CAVITY["segments"], polar_max=105.0)
    d = d * [1, 1, -1]  # pole at the back, opening towards the lips
    out["mouth_cavity"] = np.array([0, MOUTH_Y - 0.003, 0.060]) + d * [0.025, 0.021, 0.028]
    for name, (y_top, y_bot, radius) in {"teeth_upper": (MOUTH_Y + 0.0095, MOUTH_Y - 0.0008, 0.039),
                                         "teeth_lower": (MOUTH_Y - 0.0012, MOUTH_Y - 0.0100, 0.037)}.items():
        rows, cols = TEETH["rows"], TEETH["cols"]
        ang = np.radians(np.linspace(-58, 58, cols))
        y = np.linspace(y_top, y_bot, rows)
        yy, aa = np.meshgrid(y, ang, indexing="ij")
        out[name] = np.stack([radius * np.sin(aa), yy, 0.046 + radius * np.cos(aa)], -1).reshape(-1, 3)
    d, _ = _sphere_dirs(TONGUE["rings"], TONGUE["segments"])
    out["tongue"] = np.array([0, MOUTH_Y - 0.0105, 0.056]) + d * [0.018, 0.0055, 0.022]
    return out


def surface(s: Sculpt) -> np.ndarray:
    """Rest vertices (N, 3) of identity ``s`` with a neutral expression (lids at rest, lips closed)."""
    P = cast(lambda p: head_sdf(p, s), ray_directions())
    poles = cast(lambda p: head_sdf(p, s), np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]))
    v = np.concatenate([P.reshape(-1, 3), poles] + [P.reshape(-1, 3)[orig] for orig, _ in TOPO.dup.values()])
    v = open_eyelids(v, s, {"left": 1.0, "right": 1.0})
    parts = _parts(s)
    full = np.zeros((TOPO.n_vertices, 3))
    full[: len(v)] = v
    for name, pos in parts.items():
        full[TOPO.groups[name]] = pos
    return full


# --------------------------------------------------------------------------------------------------
# 5. expression dials: eyelids through `open_eyelids`, the rest as smooth local displacement fields
# --------------------------------------------------------------------------------------------------

def _gauss(v, centre, sigma):
    return np.exp(-0.5 * np.sum(((v - centre) / sigma) ** 2, axis=-1))


def _lip_sides():
    """Masks over all vertices: upper-lip side (above the mouth cut) and lower-lip side (copies, below)."""
    n = TOPO.n_vertices
    row = np.full(n, -1)
    row[: R_ * C_] = np.arange(R_ * C_) // C_
    upper = np.zeros(n, bool)
    lower = np.zeros(n, bool)
    upper[: R_ * C_] = row[: R_ * C_] <= ROW_MOUTH
    lower[: R_ * C_] = row[: R_ * C_] > ROW_MOUTH
    lower[TOPO.dup["mouth"][1]] = True
    for name in ("teeth_lower", "tongue"):
        lower[TOPO.groups[name]] = True
    upper[TOPO.groups["teeth_upper"]] = True
    return upper, lower


def expression_field(v: np.ndarray, name: str) -> np.ndarray:
    """Displacement (N, 3) in metres of expression ``name`` at full strength, on the rest mesh ``v``.

    Each is a sum of Gaussian-weighted vectors around facial landmarks of the rest mesh (mouth corners,
    lips, cheeks, brows, nose wings), the way FACS action units move tissue locally.
    """
    upper, lower = _lip_sides()
    skin = np.zeros(len(v), bool)
    skin[: R_ * C_ + 2] = True
    skin[TOPO.dup["mouth"][1]] = True
    mouth_cols = MOUTH_COLS
    corner = {s: v[ROW_MOUTH * C_ + mouth_cols[k]] for k, s in ((1, "left"), (0, "right"))}
    lip_mid = v[ROW_MOUTH * C_ + int(np.argmin(np.abs(THETA)))]
    brow = {s: np.array([sx * EYE_X, EYE_Y + 0.017, 0.083]) for s, sx in (("left", 1), ("right", -1))}
    cheek = {s: np.array([sx * 0.040, -0.018, 0.070]) for s, sx in (("left", 1), ("right", -1))}
    wing = {s: np.array([sx * 0.015, -0.026, 0.092]) for s, sx in (("left", 1), ("right", -1))}
    d = np.zeros_like(v)
    sign = {"left": 1.0, "right": -1.0}

    def add(mask, centre, sigma, vec):
        d[:] += (mask * _gauss(v, centre, sigma))[:, None] * np.asarray(vec)

    mouth = skin | TOPO_MOUTH_INTERIOR
    if name in ("smile", "smile_left", "smile_right"):
        for s in ("left", "right"):
            if name in ("smile", f"smile_{s}"):
                add(skin, corner[s], 0.013, [sign[s] * 0.006, 0.0075, -0.004])
                add(skin, cheek[s], 0.015, [0.0, 0.0035, 0.002])
    elif name == "frown":
        for s in ("left", "right"):
            add(skin, corner[s], 0.011, [0.0, -0.0045, -0.001])
    elif name == "mouth_stretch":
        for s in ("left", "right"):
            add(skin, corner[s], 0.012, [sign[s] * 0.006, -0.001, -0.003])
    elif name == "pucker":
        w = _gauss(v, lip_mid, [0.022, 0.013, 0.02]) * mouth
        d[:, 0] += -0.35 * (v[:, 0] - lip_mid[0]) * w
        d[:, 2] += 0.006 * w
    elif name == "lip_funnel":
        w = _gauss(v, lip_mid, [0.02, 0.012, 0.02]) * mouth
        d[:, 2] += 0.004 * w
        d[:, 1] += 0.0025 * w * upper - 0.0035 * w * lower
    elif name in ("mouth_left", "mouth_right"):
        add(mouth, lip_mid, [0.02, 0.016, 0.03], [sign[name[6:]] * 0.007, 0.0, -0.001])
    elif name == "upper_lip_raise":
        add(upper & mouth, lip_mid + [0, 0.004, 0], [0.02, 0.009, 0.03], [0.0, 0.0035, 0.001])
    elif name == "lower_lip_depress":
        add(lower & mouth, lip_mid - [0, 0.006, 0], [0.02, 0.009, 0.03], [0.0, -0.0045, 0.001])
    elif name == "lip_press":
        add(mouth, lip_mid, [0.022, 0.008, 0.03], [0.0, 0.0, -0.003])
    elif name == "cheek_puff":
        for s in ("left", "right"):
            c = np.array([sign[s] * 0.036, -0.036, 0.062])
            add(skin, c, 0.017, [sign[s] * 0.010, 0.0, 0.005])
    elif name == "cheek_raise":
        for s in ("left", "right"):
            add(skin, cheek[s], 0.013, [0.0, 0.0035, 0.0015])
    elif name in ("brow_raise", "brow_inner_up", "brow_lower"):
        for s in ("left", "right"):
            if name == "brow_raise":
                add(skin, brow[s] + [0, 0.004, 0], [0.026, 0.012, 0.03], [0.0, 0.0055, 0.0])
            elif name == "brow_inner_up":
                add(skin, brow[s] - [sign[s] * 0.017, 0, 0], [0.011, 0.01, 0.03], [0.0, 0.005, 0.0])
            else:
                add(skin, brow[s], [0.022, 0.009, 0.03], [-sign[s] * 0.002, -0.004, 0.001])
    elif name in ("nose_wrinkle", "sneer_left", "sneer_right"):
        for s in ("left", "right"):
            if name in ("nose_wrinkle", f"sneer_{s}"):
                add(skin, wing[s], 0.008, [0.0, 0.003, 0.0])
                add(upper & skin, corner[s] + [-sign[s] * 0.01, 0.004, 0], 0.009, [0.0, 0.003, 0.0])
    else:
        raise Morph4DError(f"unknown expression '{name}'")
    return d


TOPO_MOUTH_INTERIOR = np.isin(np.arange(TOPO.n_vertices), TOPO.groups["mouth_interior"])
LID_DIALS = {"blink_left": {"left": 0.0, "right": 1.0}, "blink_right": {"left": 1.0, "right": 0.0},
             "eyes_wide": {"left": 1.35, "right": 1.35}, "squint": {"left": 0.55, "right": 0.55}}


def expressed(s: Sculpt, name: str, rest: np.ndarray | None = None) -> np.ndarray:
    """The rest mesh of ``s`` with expression ``name`` at strength 1."""
    rest = surface(s) if rest is None else rest
    if name in LID_DIALS:
        P = cast(lambda p: head_sdf(p, s), ray_directions())
        poles = cast(lambda p: head_sdf(p, s), np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]))
        raw = np.concatenate([P.reshape(-1, 3), poles] + [P.reshape(-1, 3)[o] for o, _ in TOPO.dup.values()])
        out = rest.copy()
        out[: len(raw)] = open_eyelids(raw, s, LID_DIALS[name])
        return out
    return rest + expression_field(rest, name)


# --------------------------------------------------------------------------------------------------
# 6. rig: joint regressors and skinning weights (FLAME's tree: global, neck, jaw, eye_left, eye_right)
# --------------------------------------------------------------------------------------------------

def _smoothstep(x, lo, hi):
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def rig(rest: np.ndarray):
    """Joint regressor (5, N) and skinning weights (N, 5) from the mean head's rest mesh."""
    n = len(rest)
    grid = rest[: R_ * C_].reshape(R_, C_, 3)
    reg = np.zeros((5, n))
    # global: the ring of the neck row nearest y = -0.175; neck: the ring nearest y = -0.105 behind the jaw
    ring_y = grid[..., 1].mean(axis=1)
    for joint, y in ((0, -0.175), (1, -0.085)):
        row = int(np.argmin(np.abs(ring_y - y)))
        reg[joint, row * C_: (row + 1) * C_] = 1.0 / C_
    # jaw: the two surface points just in front of the ear lobes (the temporomandibular joints)
    for target in ([0.068, -0.020, 0.004], [-0.068, -0.020, 0.004]):
        reg[2, int(np.argmin(np.linalg.norm(rest[: R_ * C_] - target, axis=-1)))] = 0.5
    # eyes: the equator ring of each eyeball (its centre, whatever the cornea does)
    _, polar = _sphere_dirs(EYE_PARTS["rings"], EYE_PARTS["segments"])
    for joint, side in ((3, "eye_left"), (4, "eye_right")):
        eq = TOPO.groups[side][np.isclose(polar, 90.0)]
        reg[joint, eq] = 1.0 / len(eq)
    joints = reg @ rest
    # skinning: the neck blends from the root (below) to the neck joint (head); the jaw takes the chin,
    # the lower lip and everything below the mouth in front of the jaw hinge, fading towards the ears,
    # the mouth corners and down the throat
    x, y, z = rest.T
    row = np.full(n, -1)
    row[: R_ * C_] = np.arange(R_ * C_) // C_
    centre = 1.0 - _smoothstep(np.abs(x), 0.010, 0.040)          # 1 between the mouth corners
    below = np.where(row > ROW_MOUTH, np.maximum(np.clip((row - ROW_MOUTH) / 10.0, 0, 1), centre), 0.0)
    below[row < 0] = 0.0
    below[TOPO.dup["mouth"][1]] = 1.0 - _smoothstep(np.abs(x[TOPO.dup["mouth"][1]]), 0.012, 0.026)
    jaw = below * _smoothstep(z, joints[2, 2] - 0.005, joints[2, 2] + 0.035) * (1.0 - _smoothstep(-y, 0.10, 0.135))
    cav = TOPO.groups["mouth_cavity"]
    jaw[cav] = _smoothstep(-(y[cav] - (MOUTH_Y - 0.003)), -0.004, 0.006)
    for name in ("teeth_lower", "tongue"):
        jaw[TOPO.groups[name]] = 1.0
    w = np.zeros((n, 5))
    w[:, 0] = np.where(TOPO_MOUTH_INTERIOR, 0.0, 1.0 - _smoothstep(y, -0.19, -0.10))
    w[:, 2] = jaw * (1.0 - w[:, 0])
    w[:, 1] = 1.0 - w[:, 0] - w[:, 2]
    for joint, side in ((3, "eye_left"), (4, "eye_right")):
        w[TOPO.groups[side]] = 0.0
        w[TOPO.groups[side], joint] = 1.0
    return reg, w


# --------------------------------------------------------------------------------------------------
# 7. bases and the model file
# --------------------------------------------------------------------------------------------------

def build_arrays(progress=None) -> dict:
    """Every array of the built-in head model (template, bases, rig, topology, groups)."""
    report = progress or (lambda msg: None)
    mean = Sculpt()
    template = surface(mean)
    report("template")
    shapedirs = np.zeros((len(template), 3, len(SHAPE_COMPONENTS)))
    for k, (name, _) in enumerate(SHAPE_COMPONENTS):
        plus, minus = np.zeros(len(SHAPE_COMPONENTS)), np.zeros(len(SHAPE_COMPONENTS))
        plus[k], minus[k] = 1.0, -1.0
        shapedirs[:, :, k] = 0.5 * (surface(Sculpt(tuple(plus))) - surface(Sculpt(tuple(minus))))
        report(f"shape {name}")
    exprdirs = np.zeros((len(template), 3, len(EXPRESSION_COMPONENTS)))
    for k, name in enumerate(EXPRESSION_COMPONENTS):
        exprdirs[:, :, k] = expressed(mean, name, template) - template
        report(f"expression {name}")
    reg, weights = rig(template)
    groups = dict(TOPO.groups, **appearance_groups(template))
    return dict(template=template.astype(np.float32), faces=TOPO.faces.astype(np.int64),
                shapedirs=shapedirs.astype(np.float32), exprdirs=exprdirs.astype(np.float32),
                joint_regressor=reg.astype(np.float32), skin_weights=weights.astype(np.float32),
                uvs=TOPO.uvs.astype(np.float32), uv_faces=TOPO.uv_faces.astype(np.int64),
                shape_names=np.array([n for n, _ in SHAPE_COMPONENTS]),
                expression_names=np.array(EXPRESSION_COMPONENTS),
                **{f"group_{k}": v.astype(np.int64) for k, v in groups.items()})


def appearance_groups(rest: np.ndarray) -> dict:
    """Vertex sets used for colouring: lips, eyebrows, irises and pupils (from the mean rest mesh)."""
    skin = np.arange(R_ * C_ + 2 + sum(len(c) for _, c in TOPO.dup.values()))
    v = rest[skin]
    lips = np.zeros(len(skin), bool)
    for c, r in (([0, MOUTH_Y + 0.0045, 0.0865], [0.0225, 0.0056, 0.0095]),
                 ([0, MOUTH_Y - 0.0058, 0.0850], [0.0210, 0.0066, 0.0100])):
        lips |= np.linalg.norm((v - c) / r, axis=-1) < 1.2
    out = {"lips": skin[lips & (v[:, 2] > 0.08)]}
    for side, sx in (("left", 1.0), ("right", -1.0)):
        # an arched band over each eye, thicker on the inner side
        u = (sx * v[:, 0] - EYE_X) / 0.024                      # -1 inner end .. +1 outer end
        arch = EYE_Y + 0.0165 + 0.0035 * (1 - u ** 2) - 0.002 * u
        half = 0.0032 * (1.15 - 0.45 * u)
        brow = (np.abs(u) < 1.0) & (np.abs(v[:, 1] - arch) < half) & (v[:, 2] > 0.06)
        out[f"eyebrow_{side}"] = skin[brow]
        idx = TOPO.groups[f"eye_{side}"]
        _, polar = _sphere_dirs(EYE_PARTS["rings"], EYE_PARTS["segments"])
        out[f"iris_{side}"] = idx[polar <= 30.0]
        out[f"pupil_{side}"] = idx[polar <= 10.0]
    return out


def write_asset(path) -> None:
    """Generate the model and write it as a plain .npz (atomically)."""
    from morph4d.heads.model import HeadModel
    arrays = build_arrays(progress=lambda msg: print(f"  built {msg}", flush=True))
    groups = {k[len("group_"):]: arrays.pop(k) for k in list(arrays) if k.startswith("group_")}
    HeadModel("builtin", arrays.pop("template"), arrays.pop("faces"), arrays.pop("shapedirs"),
              arrays.pop("exprdirs"), arrays.pop("joint_regressor"), arrays.pop("skin_weights"),
              uvs=arrays.pop("uvs"), uv_faces=arrays.pop("uv_faces"), vertex_groups=groups,
              shape_names=arrays.pop("shape_names"), expression_names=arrays.pop("expression_names"))\
        .save_npz(path)


if __name__ == "__main__":
    import sys

    from morph4d.heads.builtin import BUILTIN_PATH
    target = sys.argv[1] if len(sys.argv) > 1 else BUILTIN_PATH
    print(f"generating the built-in head model -> {target}")
    write_asset(target)
