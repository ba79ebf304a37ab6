"""Procedural identities for synthetic multi-view head data: shape, skin, eyes, hair, beard, accessories.

No public multi-view head dataset can be downloaded here, so the data that trains and measures MVP4D's
pipeline (its curriculum, §3.3 and S2.2, is built on Nersemble, RenderMe-360, Ava-256 and VFHQ) is
rendered from procedural people with exact ground truth. An identity is a pure function of its seed:

1. **Appearance** (``Appearance``, JSON-able): skin tone, age, eye/iris colour, hair colour and style
   (bald, buzz, short, curly, medium, long, bun), brows, lips, freckles/moles/blemishes, beard (stubble,
   moustache, goatee, full), glasses (frames, sunglasses), earrings (studs, hoops).
2. **Shape**: built-in head shape coefficients ~ N(0, ``shape_std``) with a small sex-linked bias.
3. **Texture atlas** ``(5, 2T, T)``: albedo RGB, specular strength, shininess / 100. The top half is the
   head's own UV layout (skin, brows, lips, eyes, mouth); the bottom half is the extras' texture: the
   same head UV layout for the hair and beard *shells* (they are built from head faces and keep their
   UVs) plus a strip (v in [0.8, 1] of the half) for the hair drape, the bun and flat accessory colours.
4. **Extra geometry** (``Extras``) beyond the head mesh, which an avatar must recover (MVP4D §4 adds
   Gaussians for hair and glasses): hair and beard shells offset from the scalp/jaw, a hanging hair
   drape, a bun, glasses (rims, bridge, temples, optional dark lenses) and earrings. Every extra vertex
   carries skinning weights and an *anchor* head vertex: shells follow the skin (the anchor's weights
   and expression/pose-corrective offsets, so a beard opens with the jaw), rigid parts follow the skull
   (the neck joint). ``render.pose_extras`` poses them with the head's own joints.

Every random choice comes from one ``torch.Generator`` seeded by the identity seed, drawn in a fixed
order, so an identity is the same at any texture size (only the texel sampling of the noise changes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from morph4d.errors import Morph4DError
from morph4d.heads.model import HeadModel
from morph4d.mesh.raster import interpolate, rasterize_screen
from morph4d.mesh.shade import vertex_normals

# Held-out identities (issue 4, item 8): reserved for evaluation, never used for training. The synth
# command refuses them unless ``--split eval``, and refuses every other seed with ``--split eval``.
EVAL_SEEDS = range(900000, 900100)

HAIR_STYLES = ("bald", "buzz", "short", "curly", "medium", "long", "bun")
BEARDS = ("none", "stubble", "moustache", "goatee", "full")
GLASSES = ("none", "frames", "sunglasses")
EARRINGS = ("none", "studs", "hoops")
PART_NAMES = ("hair", "beard", "drape", "bun", "glasses", "lenses", "earrings")

# Region of each extra part in the extras half of the atlas (u0, v0, u1, v1), v measured in that half.
# The hair and beard shells use the head's UV layout (v < 0.78); the strip below holds the rest.
_STRIP = {"drape": (0.0, 0.8, 0.6, 1.0), "bun": (0.6, 0.8, 0.8, 1.0), "glasses": (0.8, 0.8, 0.9, 0.9),
          "lenses": (0.8, 0.9, 0.9, 1.0), "earrings": (0.9, 0.8, 1.0, 1.0)}

# Skin tones from very light to very dark (sRGB albedo), interpolated by a uniform tone in [0, 1].
_SKIN = torch.tensor([[0.97, 0.83, 0.74], [0.93, 0.74, 0.62], [0.86, 0.64, 0.50], [0.76, 0.54, 0.39],
                      [0.64, 0.44, 0.30], [0.50, 0.33, 0.22], [0.37, 0.24, 0.16], [0.25, 0.16, 0.11]])
_HAIR = {"black": (0.045, 0.038, 0.034), "dark_brown": (0.14, 0.085, 0.055), "brown": (0.30, 0.19, 0.11),
         "light_brown": (0.48, 0.34, 0.20), "blonde": (0.80, 0.64, 0.40), "platinum": (0.90, 0.86, 0.76),
         "auburn": (0.45, 0.17, 0.08), "ginger": (0.76, 0.38, 0.14), "grey": (0.58, 0.57, 0.55),
         "white": (0.88, 0.87, 0.85), "blue": (0.15, 0.28, 0.60), "pink": (0.85, 0.45, 0.60)}
_EYES = {"dark_brown": (0.16, 0.09, 0.05), "brown": (0.33, 0.19, 0.09), "hazel": (0.42, 0.33, 0.15),
         "green": (0.28, 0.42, 0.24), "blue": (0.30, 0.47, 0.68), "grey": (0.48, 0.53, 0.58),
         "amber": (0.58, 0.38, 0.12)}
_FRAMES = {"black": (0.03, 0.03, 0.03), "tortoise": (0.30, 0.16, 0.07), "gold": (0.78, 0.62, 0.30),
           "silver": (0.75, 0.75, 0.76), "red": (0.55, 0.08, 0.07), "navy": (0.08, 0.12, 0.30),
           "clear": (0.80, 0.78, 0.74)}
_LIPSTICK = {"red": (0.58, 0.13, 0.15), "pink": (0.78, 0.42, 0.48), "berry": (0.42, 0.12, 0.22),
             "nude": (0.72, 0.48, 0.42)}


@dataclass(frozen=True)
class IdentityConfig:
    shape_std: float = 0.8        # std of the built-in head's shape coefficients (each 1 = one sculpt std)
    texture_size: int = 512       # T: the atlas is (5, 2T, T); 512 resolves pores at 512 px renders
    accessories: bool = True      # glasses, earrings (turn off for plain heads)

    def __post_init__(self):
        if self.shape_std < 0:
            raise Morph4DError(f"shape_std must be >= 0, got {self.shape_std}")
        if self.texture_size < 64 or self.texture_size & (self.texture_size - 1):
            raise Morph4DError(f"texture_size must be a power of two >= 64, got {self.texture_size}")


@dataclass(frozen=True)
class Appearance:
    """Everything about a person that is not geometry noise; stored in each sequence's meta.json."""
    masculine: bool
    age: float
    skin_tone: float
    skin: tuple
    eye_color: str
    iris: tuple
    hair_color: str
    hair: tuple
    hair_style: str
    hairline: float           # degrees added to the hairline's polar angle (+ = lower on the forehead)
    brow_thickness: float
    lips: tuple
    lipstick: str
    freckles: int
    moles: int
    blemishes: int
    beard: str
    glasses: str
    frame_color: str
    earrings: str

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class Extras:
    """Geometry beyond the head mesh, in the identity's rest frame (neutral shape, no expression).

    vertices (M, 3), faces (K, 3) int64, uvs (Mu, 2) in the extras half of the atlas, uv_faces (K, 3),
    weights (M, 5) skinning weights, anchors (M,) int64 head vertex whose expression and pose-corrective
    offsets the vertex follows (-1: none, rigid), part (K,) int64 index into ``PART_NAMES``.
    """
    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    uv_faces: torch.Tensor
    weights: torch.Tensor
    anchors: torch.Tensor
    part: torch.Tensor

    @staticmethod
    def empty() -> "Extras":
        z = torch.zeros
        return Extras(z(0, 3), z(0, 3, dtype=torch.long), z(0, 2), z(0, 3, dtype=torch.long), z(0, 5),
                      z(0, dtype=torch.long), z(0, dtype=torch.long))

    @staticmethod
    def cat(items: list["Extras"]) -> "Extras":
        out, v_off, uv_off = [], 0, 0
        for e in items:
            out.append((e.faces + v_off, e.uv_faces + uv_off))
            v_off, uv_off = v_off + len(e.vertices), uv_off + len(e.uvs)
        if not items:
            return Extras.empty()
        return Extras(torch.cat([e.vertices for e in items]), torch.cat([f for f, _ in out]),
                      torch.cat([e.uvs for e in items]), torch.cat([u for _, u in out]),
                      torch.cat([e.weights for e in items]), torch.cat([e.anchors for e in items]),
                      torch.cat([e.part for e in items]))


@dataclass
class Identity:
    """One procedural person: ``shape`` (S,), ``texture`` (5, 2T, T), ``extras``, ``appearance``."""
    seed: int
    appearance: Appearance
    shape: torch.Tensor
    texture: torch.Tensor
    extras: Extras


# ---------------------------------------------------------------------------------------------------
# 1. appearance
# ---------------------------------------------------------------------------------------------------

def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _choice(g: torch.Generator, options: dict | tuple, weights) -> str:
    keys = list(options)
    w = torch.tensor(weights, dtype=torch.float64)
    return keys[int(torch.multinomial(w / w.sum(), 1, generator=g))]


def sample_appearance(g: torch.Generator, accessories: bool = True) -> Appearance:
    """Draw an ``Appearance``; frequencies are rough population shares, not a demographic model."""
    masculine = _u(g) < 0.5
    age = 18 + 62 * _u(g) ** 1.6           # skewed young, like the capture datasets
    tone = _u(g)
    pos = tone * (len(_SKIN) - 1)
    i = min(int(pos), len(_SKIN) - 2)
    skin = _SKIN[i] + (pos - i) * (_SKIN[i + 1] - _SKIN[i])
    skin = skin * torch.tensor([1 + _u(g, -0.03, 0.04), 1.0, 1 + _u(g, -0.05, 0.03)])  # red/yellow undertone
    skin = skin.clamp(0, 1)
    dark = tone > 0.55
    eye = _choice(g, _EYES, [5, 4, 2, 1, 1, 1, 0.5] if dark else [1, 2, 2, 2, 3, 1.5, 0.5])
    hair_w = ([8, 3, 1, 0.3, 0.2, 0.1, 0.05, 0.05, 0.1, 0.05, 0.1, 0.1] if dark else
              [2, 3, 3, 2, 2, 0.6, 1, 0.8, 0.1, 0.05, 0.2, 0.2])
    hair_color = _choice(g, _HAIR, hair_w)
    if _u(g) < 0.9 * (age - 45) / 35:          # greying with age
        hair_color = "grey" if _u(g) < 0.7 else "white"
    style = _choice(g, HAIR_STYLES, [0.12, 0.2, 0.4, 0.12, 0.08, 0.04, 0.04] if masculine
                    else [0.01, 0.03, 0.1, 0.13, 0.22, 0.33, 0.18])
    hairline = _u(g, -4, 4) - (_u(g, 0, 10) if masculine and age > 35 else 0.0)   # receding with age
    beard = _choice(g, BEARDS, [0.45, 0.2, 0.07, 0.1, 0.18] if masculine else [1, 0, 0, 0, 0])
    lip_base = torch.tensor([0.76, 0.36, 0.36]) * (1.0 - 0.55 * tone)
    lips = (0.45 * skin + 0.55 * lip_base).clamp(0, 1)
    lipstick = _choice(g, _LIPSTICK | {"none": None}, [0.05, 0.04, 0.03, 0.04, 0.84] if not masculine
                       else [0, 0, 0, 0, 1])
    light_red = not dark and hair_color in ("ginger", "auburn", "blonde")
    freckles = int(_u(g, 40, 400)) if _u(g) < (0.55 if light_red else 0.12) else 0
    moles, blemishes = int(_u(g, 0, 6)), int(_u(g, 0, 10))
    glasses = _choice(g, GLASSES, [0.72, 0.23, 0.05]) if accessories else "none"
    frame_color = _choice(g, _FRAMES, [3, 2, 1, 1, 0.5, 0.5, 0.5])
    earrings = (_choice(g, EARRINGS, [0.9, 0.07, 0.03] if masculine else [0.55, 0.25, 0.2])
                if accessories else "none")
    return Appearance(masculine=masculine, age=round(age, 1), skin_tone=round(tone, 4),
                      skin=tuple(round(float(c), 4) for c in skin), eye_color=eye, iris=_EYES[eye],
                      hair_color=hair_color, hair=_HAIR[hair_color], hair_style=style, hairline=round(hairline, 3),
                      brow_thickness=round(_u(g, 0.7, 1.35) * (1.15 if masculine else 0.9), 3),
                      lips=tuple(round(float(c), 4) for c in lips), lipstick=lipstick, freckles=freckles,
                      moles=moles, blemishes=blemishes, beard=beard, glasses=glasses, frame_color=frame_color,
                      earrings=earrings)


def sample_shape(g: torch.Generator, model: HeadModel, appearance: Appearance, std: float) -> torch.Tensor:
    """Shape coefficients ~ N(0, std), with a wider jaw and stronger brow for masculine faces."""
    shape = std * torch.randn(model.num_shape, generator=g)
    bias = {"jaw_width": 0.5, "brow_ridge": 0.6, "neck_thickness": 0.6, "lip_fullness": -0.3}
    sign = 1.0 if appearance.masculine else -1.0
    for name, b in bias.items():
        if name in model.shape_names:
            shape[model.shape_names.index(name)] += sign * b * std
    return shape


# ---------------------------------------------------------------------------------------------------
# 2. shared geometry helpers
# ---------------------------------------------------------------------------------------------------

@dataclass
class _Frame:
    """The neutral mesh of one identity and derived quantities used by texture and extras."""
    model: HeadModel
    rest: torch.Tensor        # (N, 3)
    normals: torch.Tensor     # (N, 3)
    skin: torch.Tensor        # (S,) indices of head-surface vertices
    centre: torch.Tensor      # (3,) origin of the (theta, phi) head directions
    eyes: torch.Tensor        # (2, 3) eyeball centres, left (+x) then right
    eye_radius: float
    mouth_y: float

    def angles(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Azimuth theta (deg, 0 = front, + = subject's left) and polar phi (deg from +y) about ``centre``."""
        q = p - self.centre
        theta = torch.rad2deg(torch.atan2(q[..., 0], q[..., 2]))
        phi = torch.rad2deg(torch.acos((q[..., 1] / q.norm(dim=-1).clamp(min=1e-9)).clamp(-1, 1)))
        return theta, phi


def _frame(model: HeadModel, shape: torch.Tensor) -> _Frame:
    groups = model.vertex_groups
    missing = [k for k in ("head", "eye_left", "eye_right", "lips") if k not in groups]
    if missing:
        raise Morph4DError(f"synthetic identities need the built-in head's vertex groups; '{model.name}' lacks "
                           f"{missing}")
    rest = model.neutral(shape)
    eyes = torch.stack([rest[groups[f"eye_{s}"]].mean(0) for s in ("left", "right")])
    radius = float((rest[groups["eye_left"]] - eyes[0]).norm(dim=-1).median())
    skin = groups["head"]
    lips = rest[groups["lips"]]
    depth = float(rest[skin, 2].amin() + rest[skin, 2].amax()) / 2
    centre = torch.tensor([0.0, float(eyes[:, 1].mean()) - 0.035, depth])   # between the ears, below the eyes
    return _Frame(model, rest, vertex_normals(rest, model.faces), skin, centre, eyes, radius,
                  float(lips[:, 1].mean()))


def _noise(g: torch.Generator, cells_h: int, cells_w: int, H: int, W: int) -> torch.Tensor:
    """Smooth value noise in about [0, 1], ``(H, W)``: a random lattice resampled to H x W.

    The lattice is always drawn at its full size (the generator advances the same at any H, W), then
    bicubic-upsampled, or area-averaged where it is finer than the texels (a band limit, no aliasing).
    """
    lattice = torch.rand(1, 1, cells_h + 1, cells_w + 1, generator=g)
    if cells_h + 1 > H or cells_w + 1 > W:
        lattice = F.adaptive_avg_pool2d(lattice, (min(H, cells_h + 1), min(W, cells_w + 1)))
        lattice = (lattice - lattice.mean()) * 2.0 + 0.5   # restore some of the contrast lost by averaging
    return F.interpolate(lattice, size=(H, W), mode="bicubic", align_corners=True)[0, 0]


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with ``sigma`` in texels (replicate padding)."""
    if sigma <= 0.3:
        return x
    r = int(3 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[0]
    y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)[0]


def _splats(g: torch.Generator, count: int, uv_lo, uv_hi, T: int, radius_px: tuple, weights_fn=None) -> torch.Tensor:
    """``count`` soft dots at random UVs in a box, ``(T, T)`` in [0, 1]; radii in texels of a 512 atlas."""
    uv = torch.tensor(uv_lo) + torch.rand(count, 2, generator=g) * (torch.tensor(uv_hi) - torch.tensor(uv_lo))
    strength = 0.5 + 0.5 * torch.rand(count, generator=g)
    if weights_fn is not None:
        strength = strength * weights_fn(uv)
    img = torch.zeros(T * T)
    idx = (uv[:, 1] * T).long().clamp(0, T - 1) * T + (uv[:, 0] * T).long().clamp(0, T - 1)
    img.index_add_(0, idx, strength)
    sigma = sum(radius_px) / 2 * T / 512
    out = _blur(img.view(1, T, T), sigma)[0] * (2 * math.pi * max(sigma, 0.5) ** 2)
    return out.clamp(0, 1)


# ---------------------------------------------------------------------------------------------------
# 3. texture atlas
# ---------------------------------------------------------------------------------------------------

def _uv_raster(model: HeadModel, attributes: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize the head's UV layout: per-texel interpolated ``attributes`` (N, C) -> (T, T, C), coverage.

    Corners are separate vertices (UV seams and the lid/lip cut copies map one UV point to several
    mesh vertices). Where UV islands overlap (an eyeball's two hemispheres share one disk) the surface
    further forward (+z in the template) wins: it is given the nearer depth.
    """
    corners = model.uvs[model.uv_faces].reshape(-1, 2) * T  # (3T', 2) texel coordinates
    depth = 1.0 - model.template[model.faces].reshape(-1, 1, 3)[:, :, 2]  # front (+z) surfaces win overlaps
    screen = torch.cat([corners, depth], -1)[None]
    faces = torch.arange(len(corners)).view(-1, 3)
    raster = rasterize_screen(screen, faces, T, T)
    values = interpolate(attributes[model.faces].reshape(-1, attributes.shape[-1]), faces, raster)[0]
    return values, raster.mask[0]


def _fill_gaps(tex: torch.Tensor, covered: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Extend each UV island outwards by a few texels so bilinear lookups at island borders stay clean."""
    mask = covered[None].float()
    for _ in range(iterations):
        s = F.avg_pool2d((tex * mask)[None], 3, 1, 1)[0]
        m = F.avg_pool2d(mask[None], 3, 1, 1)[0]
        tex = torch.where(mask > 0, tex, s / m.clamp(min=1e-6))
        mask = torch.maximum(mask, (m > 0).float())
    return tex


def paint_head_texture(fr: _Frame, a: Appearance, g: torch.Generator, T: int) -> torch.Tensor:
    """The head half of the atlas, ``(5, T, T)``: albedo, specular strength, shininess / 100."""
    model, groups = fr.model, fr.model.vertex_groups
    part = torch.zeros(model.num_vertices, dtype=torch.long)  # 0 skin, 1 eye, 2 cavity, 3 teeth, 4 tongue
    for k, names in enumerate((("eye_left", "eye_right"), ("mouth_cavity",), ("teeth_upper", "teeth_lower"),
                               ("tongue",)), start=1):
        for n in names:
            if n in groups:
                part[groups[n]] = k
    lips = torch.zeros(model.num_vertices)
    lips[groups["lips"]] = 1.0
    attrs = torch.cat([fr.rest, F.one_hot(part, 5).float(), lips[:, None]], -1)
    val, covered = _uv_raster(model, attrs, T)
    p = val[..., :3]                                         # (T, T, 3) rest position of each texel
    parts = val[..., 3:8].argmax(-1)
    lip_mask = _smoothstep((val[..., 8] - 0.15) / 0.7)
    x, y, z = p.unbind(-1)
    ax = x.abs()
    skin_mask = (parts == 0).float()

    # 3.1 skin: tone + low-frequency mottling + redness on cheeks, nose and ears + pores
    rgb = torch.tensor(a.skin).view(3, 1, 1).expand(3, T, T).clone()
    mottle = _noise(g, 6, 12, T, T) - 0.5
    rgb = rgb * (1 + 0.08 * mottle)
    red = torch.tensor([0.06, -0.03, -0.03]).view(3, 1, 1)
    cheeks = torch.exp(-(((ax - 0.045) / 0.018) ** 2 + ((y + 0.02) / 0.018) ** 2)) * (z > 0.03)
    nose = torch.exp(-((x / 0.012) ** 2 + ((y + 0.017) / 0.012) ** 2)) * (z > 0.08)
    ears = torch.exp(-(((ax - 0.08) / 0.01) ** 2)) * (y.abs() < 0.05)
    blush = _u(g, 0.4, 1.3)
    rgb = rgb + red * (blush * cheeks + 0.8 * nose + 0.6 * ears) * (1 - 0.6 * a.skin_tone)
    under_eye = sum(torch.exp(-(((x - e[0]) / 0.013) ** 2 + ((y - e[1] + 0.012) / 0.006) ** 2)) for e in fr.eyes)
    rgb = rgb * (1 - _u(g, 0.0, 0.12) * under_eye)
    pores = _noise(g, 220, 220, T, T) - 0.5
    rgb = rgb * (1 + 0.05 * pores * (0.6 + 0.8 * (cheeks + nose)))
    # 3.2 age: forehead lines, crow's feet, nasolabial folds (dark thin bands)
    age = max(0.0, (a.age - 28) / 50)
    if age > 0:
        forehead = ((torch.sin((y - 0.07) * 2 * math.pi / 0.009) > 0.85).float()
                    * (y > 0.055) * (y < 0.095) * (ax < 0.04))
        fold_x = 0.022 + 0.35 * (-0.02 - y).clamp(min=0)
        folds = torch.exp(-(((ax - fold_x) / 0.0015) ** 2)) * (y < -0.02) * (y > -0.06) * (z > 0.06)
        crows = sum(((torch.sin(torch.atan2(y - e[1], x - e[0]) * 9) > 0.9).float()
                     * (((x - e[0]).abs() > 0.016) & ((x - e[0]).abs() < 0.024) & ((y - e[1]).abs() < 0.008)))
                    for e in fr.eyes)
        rgb = rgb * (1 - age * (0.12 * forehead + 0.25 * folds + 0.12 * crows))
    # 3.3 freckles, moles, blemishes (splats in the face region of the UV map)
    face_lo, face_hi = (0.38, 0.27), (0.62, 0.50)
    fr_w = lambda uv: torch.exp(-((uv[:, 0] - 0.5) / 0.08) ** 2)  # noqa: E731  denser near the nose
    freckles = _splats(g, a.freckles, face_lo, face_hi, T, (0.8, 1.6), fr_w) if a.freckles else 0
    moles = _splats(g, a.moles, (0.3, 0.2), (0.7, 0.62), T, (1.2, 2.2)) if a.moles else 0
    blem = _splats(g, a.blemishes, face_lo, face_hi, T, (2.5, 5.0)) if a.blemishes else 0
    dark = torch.tensor(a.skin).view(3, 1, 1) * torch.tensor([0.62, 0.48, 0.40]).view(3, 1, 1)
    rgb = rgb + (dark - rgb) * (0.45 * freckles + 0.8 * moles) + torch.tensor([0.06, -0.03, -0.03]).view(3, 1, 1) * blem
    # 3.4 beard stubble / shadow and the scalp under the hair
    hair = torch.tensor(a.hair).view(3, 1, 1)
    if a.beard != "none":
        region = _beard_mask(fr, p, a.beard)
        dots = (_noise(g, 300, 300, T, T) > 0.55).float()
        amount = {"stubble": 0.55, "moustache": 0.3, "goatee": 0.35, "full": 0.5}[a.beard]
        rgb = rgb + (hair * 0.8 - rgb) * region * amount * (0.4 + 0.6 * dots)
    if a.hair_style != "bald":
        th, ph = fr.angles(p)
        line = _hairline(a.hair_style, a.hairline)
        inside = _smoothstep((line(th.abs()) - ph + 4.0) / 4.0)   # full under the shell's jagged edge
        rgb = rgb + (hair * 0.9 - rgb) * inside * (0.9 if a.hair_style != "buzz" else 0.6)
    # 3.5 eyebrows: an arched band over each eye of short strokes, the hair colour a little darker
    strokes = _noise(g, 18, 700, T, T)
    brow = torch.zeros(T, T)
    for e in fr.eyes:
        sx = 1.0 if e[0] > 0 else -1.0
        u = (sx * x - (sx * e[0] - 0.006)) / 0.026
        arch = e[1] + 0.016 + 0.004 * (1 - u ** 2) - 0.002 * u
        half = 0.0027 * a.brow_thickness * (1.2 - 0.5 * u).clamp(min=0.3)
        band = _smoothstep((half - (y - arch).abs()) / 0.0015) * _smoothstep((1 - u.abs()) / 0.25) * (z > 0.05)
        brow = torch.maximum(brow, band)
    brow_rgb = hair * (0.55 if sum(a.hair) < 1.5 else 0.45) + 0.02
    rgb = rgb + (brow_rgb - rgb) * brow * (0.55 + 0.45 * strokes) * skin_mask
    # 3.6 lash line and lips
    for e in fr.eyes:
        d = (p - e).norm(dim=-1) - fr.eye_radius
        upper = (y > e[1]).float()
        lash = _smoothstep((0.0018 + 0.0012 * upper - d) / 0.0012) * ((z - e[2]) > 0.004) * skin_mask
        rgb = rgb * (1 - 0.85 * lash)
    lip_rgb = torch.tensor(a.lips if a.lipstick == "none" else _LIPSTICK[a.lipstick]).view(3, 1, 1)
    lines = _noise(g, 4, 160, T, T) - 0.5
    lip_col = lip_rgb * (1 + 0.12 * lines) * (1 - 0.35 * torch.exp(-(((y - fr.mouth_y) / 0.0015) ** 2)))
    rgb = rgb + (lip_col - rgb) * lip_mask * skin_mask
    # 3.7 eyes: sclera, iris with fibres and a dark limbal ring, pupil
    eye_rgb = torch.tensor([0.90, 0.88, 0.85]).view(3, 1, 1).expand(3, T, T).clone()
    pupil = _u(g, 9.0, 13.0)
    fibre_table = _noise(g, 1, 72, 1, 720)[0]                 # radial fibres: noise over the angle about the axis
    for e in fr.eyes:
        q = p - e
        polar = torch.rad2deg(torch.acos((q[..., 2] / q.norm(dim=-1).clamp(min=1e-9)).clamp(-1, 1)))
        near = (q.norm(dim=-1) < fr.eye_radius * 1.3).float()
        around = ((torch.atan2(q[..., 1], q[..., 0]) + math.pi) / (2 * math.pi) * 719).long().clamp(0, 719)
        fibres = fibre_table[around]
        iris = torch.tensor(a.iris).view(3, 1, 1) * (0.6 + 0.8 * fibres) * (1 + 0.5 * _smoothstep((polar - 14) / 12))
        iris = iris * (1 - 0.55 * _smoothstep((polar - 26) / 4))
        w = _smoothstep((30.5 - polar) / 1.5) * near
        eye_rgb = eye_rgb + (iris - eye_rgb) * w
        eye_rgb = eye_rgb * (1 - 0.97 * _smoothstep((pupil - polar) / 1.0) * near)
        eye_rgb = eye_rgb * (1 - 0.15 * _smoothstep((polar - 60) / 30) * near)  # veins/shade at the corners
    # 3.8 mouth interior
    cavity = torch.tensor([0.32, 0.09, 0.09]).view(3, 1, 1) * (0.6 + 0.4 * _smoothstep((z - 0.035) / 0.03))
    gaps = (torch.sin(x * 2 * math.pi / 0.0085) > 0.93).float()             # a dark line every 8.5 mm
    teeth = torch.tensor([0.90, 0.87, 0.78]).view(3, 1, 1) * (1 - 0.25 * gaps)
    tongue = torch.tensor([0.74, 0.34, 0.36]).view(3, 1, 1) * (1 + 0.1 * pores)
    out_rgb = torch.where(parts == 1, eye_rgb, rgb)
    out_rgb = torch.where(parts == 2, cavity, out_rgb)
    out_rgb = torch.where(parts == 3, teeth, out_rgb)
    out_rgb = torch.where(parts == 4, tongue, out_rgb)
    # 3.9 specular strength and shininess (T-zone shinier; wet lips, eyes, teeth)
    oily = _u(g, 0.6, 1.4)
    forehead_zone = torch.exp(-((x / 0.03) ** 2 + ((y - 0.075) / 0.02) ** 2))
    spec = 0.10 * oily * (1 + 0.8 * (nose + forehead_zone)) * (1 - 0.6 * brow)
    spec = spec * (1 + 0.4 * pores)
    spec = torch.where(lip_mask > 0.5, torch.full_like(spec, 0.3 if a.lipstick == "none" else 0.45), spec)
    spec = torch.stack([spec, torch.full_like(spec, 0.9), torch.full_like(spec, 0.05), torch.full_like(spec, 0.5),
                        torch.full_like(spec, 0.4)])[parts, torch.arange(T)[:, None], torch.arange(T)]
    shine = torch.tensor([0.18, 1.2, 0.1, 0.6, 0.4])[parts] + 0.2 * lip_mask * (parts == 0)
    tex = torch.cat([out_rgb.clamp(0, 1), spec[None], shine[None]])
    return _fill_gaps(tex, covered)


def _hairline(style: str, jitter: float):
    """Polar angle (deg) of the hairline as a function of |azimuth| (deg) about the head centre.

    Control points: forehead (0), temple corners (45), sideburns in front of the ear (74), over the
    ear (84-112), behind the ear (128), nape (180). Buzz cuts and receding lines sit higher.
    """
    front = 30.0 + jitter + (6.0 if style == "buzz" else 0.0)
    knots = torch.tensor([0.0, 25.0, 45.0, 62.0, 74.0, 84.0, 112.0, 128.0, 150.0, 180.0])
    polar = torch.tensor([front, front + 2, front + 12, 80.0, 90.0, 57.0, 57.0, 95.0, 115.0, 124.0])
    polar[4] -= 12.0 if style in ("buzz", "bun") else 0.0

    def line(theta_abs: torch.Tensor) -> torch.Tensor:
        t = theta_abs.clamp(0, 180)
        i = torch.searchsorted(knots, t.contiguous(), right=True).clamp(1, len(knots) - 1)
        t0, t1, p0, p1 = knots[i - 1], knots[i], polar[i - 1], polar[i]
        w = _smoothstep((t - t0) / (t1 - t0))
        return p0 + (p1 - p0) * w

    return line


def _beard_mask(fr: _Frame, p: torch.Tensor, beard: str) -> torch.Tensor:
    """Soft beard region (0..1) at points ``p`` (..., 3) by style; the lips are not excluded here."""
    x, y, z = p.unbind(-1)
    ax, my = x.abs(), fr.mouth_y
    cheek_line = my + 0.028 - 0.25 * ax            # higher near the nose, lower towards the ears
    full = _smoothstep((cheek_line - y) / 0.006) * _smoothstep((z + 0.01) / 0.01) * _smoothstep((y + 0.135) / 0.01)
    moustache = (_smoothstep((0.028 - ax) / 0.006) * _smoothstep((y - my - 0.003) / 0.002)
                 * _smoothstep((my + 0.017 - y) / 0.003) * (z > 0.06))
    chin = _smoothstep((0.024 - ax) / 0.006) * _smoothstep((my - 0.004 - y) / 0.002) * _smoothstep((y + 0.118) / 0.006)
    return {"stubble": full, "full": full, "moustache": moustache,
            "goatee": torch.maximum(moustache, chin * (z > 0.03))}[beard]


def paint_extras_texture(fr: _Frame, a: Appearance, g: torch.Generator, T: int) -> torch.Tensor:
    """The extras half of the atlas, ``(5, T, T)`` (layout in the module docstring)."""
    hair = torch.tensor(a.hair).view(3, 1, 1)
    # strands run along v (from the crown down), so noise is fine across u and coarse along v
    strands = _noise(g, 10, 480, T, T)
    clumps = _noise(g, 5, 60, T, T)
    curls = _noise(g, 90, 160, T, T)
    light = 0.55 + (0.6 * curls if a.hair_style == "curly" else 0.5 * strands + 0.35 * (clumps - 0.5))
    grey = a.hair_color not in ("grey", "white") and a.age > 40
    streaks = (_noise(g, 4, 200, T, T) > 0.72).float() * (0.4 if grey else 0.0)
    rgb = hair * light
    rgb = rgb + (torch.tensor([0.7, 0.7, 0.68]).view(3, 1, 1) - rgb) * streaks
    rgb = rgb.clamp(0, 1)
    spec = torch.full((1, T, T), 0.22) * (0.6 + 0.6 * strands)
    shine = torch.full((1, T, T), 0.25)
    tex = torch.cat([rgb, spec, shine])
    # flat accessory colours in the strip
    rows = torch.arange(T, dtype=torch.float32)[:, None].add(0.5).div(T).expand(T, T)
    cols = torch.arange(T, dtype=torch.float32)[None].add(0.5).div(T).expand(T, T)
    frame_rgb = torch.tensor(_FRAMES[a.frame_color])
    metal = a.frame_color in ("gold", "silver")
    earring_rgb = torch.tensor((0.83, 0.66, 0.32) if _u(g) < 0.6 else (0.80, 0.80, 0.82))
    for name, colour, s, sh in (("glasses", frame_rgb, 0.9 if metal else 0.5, 0.9 if metal else 0.6),
                                ("lenses", torch.tensor((0.04, 0.05, 0.06)), 1.2, 1.5),
                                ("earrings", earring_rgb, 1.3, 1.0)):
        u0, v0, u1, v1 = _STRIP[name]
        box = (cols >= u0) & (cols < u1) & (rows >= v0) & (rows < v1)
        tex = torch.where(box, torch.cat([colour, torch.tensor([s, sh])]).view(5, 1, 1), tex)
    return tex


# ---------------------------------------------------------------------------------------------------
# 4. extra geometry
# ---------------------------------------------------------------------------------------------------

def _rigid(n: int) -> torch.Tensor:
    """Skinning weights of a part rigidly attached to the skull: all on the neck joint (FLAME joint 1)."""
    w = torch.zeros(n, 5)
    w[:, 1] = 1.0
    return w


def _strip_uv(name: str, uv01: torch.Tensor) -> torch.Tensor:
    u0, v0, u1, v1 = _STRIP[name]
    return torch.stack([u0 + uv01[:, 0] * (u1 - u0), v0 + uv01[:, 1] * (v1 - v0)], -1)


def _shell(fr: _Frame, select: torch.Tensor, thickness: torch.Tensor, part: str) -> Extras:
    """Offset the head faces whose three vertices are all in ``select`` (N,) bool along the normals.

    thickness: (N,) metres. The shell keeps the head's UVs (so it samples the extras half in the head's
    UV layout) and follows its anchor vertex: weights, expression and pose-corrective offsets.
    """
    model = fr.model
    faces = model.faces[select[model.faces].all(-1)]
    used = torch.unique(faces)
    remap = torch.full((model.num_vertices,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    v = fr.rest[used] + fr.normals[used] * thickness[used, None]
    return Extras(v, remap[faces], model.uvs, model.uv_faces[select[model.faces].all(-1)],
                  model.skin_weights[used], used, torch.full((len(faces),), PART_NAMES.index(part)))


def _grid_faces(rows: int, cols: int, wrap: bool = False) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols if wrap else cols - 1), indexing="ij")
    j1 = (j + 1) % cols
    a, b, c, d = i * cols + j, i * cols + j1, (i + 1) * cols + j, (i + 1) * cols + j1
    return torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])


def _tube(path: torch.Tensor, radius: float, sides: int = 6, closed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A tube of ``radius`` around the polyline ``path`` (P, 3), rotation-minimising frames."""
    P = len(path)
    nxt = torch.roll(path, -1, 0) if closed else torch.cat([path[1:], 2 * path[-1:] - path[-2:-1]])
    prv = torch.roll(path, 1, 0) if closed else torch.cat([2 * path[:1] - path[1:2], path[:-1]])
    tangent = F.normalize(nxt - prv, dim=-1)
    ref = torch.tensor([0.0, 0.0, 1.0]) if tangent[0, 2].abs() < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    normals, n = [], F.normalize(torch.linalg.cross(tangent[0], ref), dim=0)
    for k in range(P):
        n = F.normalize(n - (n @ tangent[k]) * tangent[k], dim=0)
        normals.append(n)
    normal = torch.stack(normals)
    binormal = torch.linalg.cross(tangent, normal)
    a = torch.arange(sides) * (2 * math.pi / sides)
    ring = normal[:, None] * a.cos()[None, :, None] + binormal[:, None] * a.sin()[None, :, None]
    verts = (path[:, None] + radius * ring).reshape(-1, 3)
    faces = _grid_faces(P + (1 if closed else 0), sides, wrap=True)
    if closed:
        faces = faces % (P * sides)
    return verts, faces


def _ellipsoid(centre: torch.Tensor, radii, rings: int = 10, segments: int = 20) -> tuple[torch.Tensor, ...]:
    """Lat-long ellipsoid: vertices, faces and (u, v) in [0, 1]^2."""
    pol = torch.linspace(0, math.pi, rings + 1)
    azi = torch.arange(segments + 1) * (2 * math.pi / segments)
    pp, aa = torch.meshgrid(pol, azi, indexing="ij")
    d = torch.stack([pp.sin() * aa.sin(), pp.cos(), pp.sin() * aa.cos()], -1).reshape(-1, 3)
    uv = torch.stack([aa / (2 * math.pi), pp / math.pi], -1).reshape(-1, 2)
    return centre + d * torch.as_tensor(radii), _grid_faces(rings + 1, segments + 1), uv


def _part(name: str, verts, faces, uv01, weights=None, anchors=None) -> Extras:
    n = len(verts)
    return Extras(verts, faces, _strip_uv(name, uv01), faces.clone(), _rigid(n) if weights is None else weights,
                  torch.full((n,), -1, dtype=torch.long) if anchors is None else anchors,
                  torch.full((len(faces),), PART_NAMES.index(name)))


def _head_radius(fr: _Frame, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Horizontal distance from the head axis to the skin at azimuths ``theta`` (deg) and heights ``y``.

    A cylindrical depth map: the largest radius of the skin vertices binned by 3 degrees x 3 mm, dilated
    by 2 bins (about 6 degrees and 6 mm) so no lookup falls between vertices.
    """
    p = fr.rest[fr.skin]
    q = p - fr.centre
    th = torch.rad2deg(torch.atan2(q[:, 0], q[:, 2]))
    r = q[:, [0, 2]].norm(dim=-1)
    y0, rows, cols = -0.4, 200, 120                      # 3 mm bins from y = -0.4 to +0.2, 3 degree bins
    bin_of = lambda t, yy: ((yy - y0) / 0.003).long().clamp(0, rows - 1) * cols \
        + ((t + 180) / 3).long().clamp(0, cols - 1)  # noqa: E731
    depth = torch.zeros(rows * cols).scatter_reduce(0, bin_of(th, p[:, 1]), r, "amax")
    depth = depth.view(1, 1, rows, cols)
    depth = F.max_pool2d(F.pad(depth, (2, 2, 0, 0), mode="circular"), 5, 1, (2, 0))[0, 0]
    return depth.reshape(-1)[bin_of(theta, y)]


def build_hair(fr: _Frame, a: Appearance, g: torch.Generator) -> list[Extras]:
    """Scalp shell for every style but bald; a drape for medium/long hair; a bun on the back of the head."""
    style = a.hair_style
    volume, drape_len, wave = _u(g, 0.7, 1.3), _u(g), _u(g)
    if style == "bald":
        return []
    p = fr.rest
    theta, phi = fr.angles(p)
    line = _hairline(style, a.hairline)
    inside = torch.zeros(fr.model.num_vertices, dtype=torch.bool)
    margin = line(theta.abs()) - phi
    inside[fr.skin] = margin[fr.skin] > -1.0
    base = {"buzz": 0.0025, "short": 0.009, "curly": 0.028, "medium": 0.012, "long": 0.012, "bun": 0.005}[style]
    top = 0.55 + 0.45 * _smoothstep((110 - phi) / 80) + 0.25 * _smoothstep((theta.abs() - 120) / 40)
    taper = 0.05 + 0.95 * _smoothstep(margin / 8.0)          # thin towards the hairline
    uv = fr.model.uvs
    # strand ridges along the flow (and curls) as small geometric relief: value noise at each vertex's UV
    ridges, curls = _noise(g, 12, 300, 256, 256), _noise(g, 40, 40, 256, 256)
    ridge = curls if style == "curly" else ridges
    # each vertex takes the UV of its first corner (at seams a vertex has several; first = deterministic)
    corners = fr.model.faces.reshape(-1)
    first = torch.full((fr.model.num_vertices,), len(corners)).scatter_reduce(
        0, corners, torch.arange(len(corners)), "amin").clamp(max=len(corners) - 1)
    vert_uv = uv[fr.model.uv_faces.reshape(-1)[first]]
    iy = (vert_uv[:, 1] * 255).long().clamp(0, 255)
    ix = (vert_uv[:, 0] * 255).long().clamp(0, 255)
    relief = (ridge[iy, ix] - 0.5) * (0.6 if style == "curly" else 0.25)     # in [-0.3, 0.3] at most
    thickness = base * volume * top * taper * (1 + relief) + 0.0006           # never below the skin
    parts = [_shell(fr, inside, thickness, "hair")]
    if style in ("medium", "long"):
        parts.append(_drape(fr, base * volume, style, drape_len, wave, g))
    if style == "bun":
        parts.append(_bun(fr, g))
    return parts


def _drape(fr: _Frame, thickness: float, style: str, length: float, wave: float, g) -> Extras:
    """Hair hanging from the sides and back: a sheet around the head, open in front of the face."""
    rows, cols = 26, 56
    open_deg = 64.0
    theta = torch.linspace(open_deg, 360 - open_deg, cols)           # round the back, subject's left first
    theta = torch.where(theta > 180, theta - 360, theta)
    y_top = float(fr.eyes[:, 1].mean()) + 0.02
    y_end = -0.06 - 0.05 * length if style == "medium" else -0.15 - 0.12 * length
    ragged = (_noise(g, 1, 14, 1, cols)[0] - 0.5) * 0.03
    s = torch.linspace(0, 1, rows)[:, None]
    y = y_top + s * (y_end + ragged[None] - y_top)                    # (rows, cols)
    r_head = _head_radius(fr, theta.expand(rows, cols), y)
    r = torch.cummax(r_head, dim=0).values                            # hair falls; it does not follow the neck in
    flare = 0.012 * s ** 1.5 * (1 + wave)
    waves = 0.003 * wave * torch.sin(s * 14 + theta[None] * 0.05)
    r = r + 0.6 * thickness + 0.002 + flare + waves
    t = torch.deg2rad(theta)[None]
    verts = torch.stack([fr.centre[0] + r * t.sin(), y, fr.centre[2] + r * t.cos()], -1).reshape(-1, 3)
    uv01 = torch.stack(torch.broadcast_tensors(torch.linspace(0, 1, cols)[None], s), -1).reshape(-1, 2)
    return _part("drape", verts, _grid_faces(rows, cols), uv01)


def _bun(fr: _Frame, g) -> Extras:
    """A bun on the back of the head, high or low."""
    elev = _u(g, 20, 60)
    d = torch.tensor([0.0, math.sin(math.radians(elev)), -math.cos(math.radians(elev))])
    q = F.normalize(fr.rest[fr.skin] - fr.centre, dim=-1)
    k = (q @ d).argmax()
    radius = _u(g, 0.026, 0.036)
    centre = fr.rest[fr.skin][k] + d * (radius * 0.6)
    verts, faces, uv = _ellipsoid(centre, (radius, radius * 0.85, radius * 0.9), 12, 24)
    return _part("bun", verts, faces, uv)


def build_beard(fr: _Frame, a: Appearance, g: torch.Generator) -> list[Extras]:
    """A beard shell over the jaw/chin/upper lip for moustache, goatee and full beards (stubble is texture)."""
    depth = _u(g, 0.6, 1.4)
    if a.beard in ("none", "stubble"):
        return []
    p = fr.rest
    mask = torch.zeros(fr.model.num_vertices)
    lips = p[fr.model.vertex_groups["lips"]]
    lip_dist = torch.cdist(p[fr.skin], lips).amin(-1)
    mask[fr.skin] = _beard_mask(fr, p[fr.skin], a.beard) * _smoothstep((lip_dist - 0.0025) / 0.002)
    base = {"moustache": 0.0025, "goatee": 0.0045, "full": 0.0065}[a.beard] * depth
    taper = _smoothstep((p[:, 1] + 0.128) / 0.03)          # thin out under the chin, towards the neck
    return [_shell(fr, mask > 0.05, base * mask * taper + 0.0004, "beard")]


def build_glasses(fr: _Frame, a: Appearance, g: torch.Generator) -> list[Extras]:
    """Rims (superellipses), bridge and temples as tubes in front of the eyes; dark lenses for sunglasses."""
    half_w, half_h, power = _u(g, 0.019, 0.025), _u(g, 0.013, 0.019), _u(g, 2.2, 5.0)
    tube = _u(g, 0.0010, 0.0022)
    if a.glasses == "none":
        return []
    skin = fr.rest[fr.skin]
    eye_y = float(fr.eyes[:, 1].mean())
    bridge_band = skin[((skin[:, 1] - eye_y).abs() < 0.004) & (skin[:, 0].abs() < 0.008)]
    z = float(bridge_band[:, 2].amax()) + 0.004            # the bridge rests just in front of the nose
    centre_y = eye_y - 0.002
    parts, t = [], torch.linspace(0, 2 * math.pi, 41)[:-1]
    rims = []
    for e in fr.eyes:
        cx = float(e[0]) * 1.05
        c, s = t.cos(), t.sin()
        x = cx + half_w * c.sign() * c.abs() ** (2 / power)
        y = centre_y + half_h * s.sign() * s.abs() ** (2 / power)
        zz = z - 0.006 * ((x / (abs(cx) + half_w)) ** 2)   # slight wrap
        rim = torch.stack([x, y, zz], -1)
        rims.append(rim)
        v, f = _tube(rim, tube, 6, closed=True)
        parts.append(_part("glasses", v, f, torch.full((len(v), 2), 0.5)))
        if a.glasses == "sunglasses":
            lens = torch.cat([torch.stack([torch.tensor(cx), torch.tensor(centre_y), torch.tensor(z)])[None], rim])
            k = torch.arange(40)
            lf = torch.stack([torch.zeros(40, dtype=torch.long), 1 + k, 1 + (k + 1) % 40], -1)
            parts.append(_part("lenses", lens, lf, torch.full((41, 2), 0.5)))
    inner = [r[r[:, 0].abs().argmin()] for r in rims]
    bridge = torch.stack([inner[0] + (inner[1] - inner[0]) * s for s in torch.linspace(0, 1, 9)])
    bridge[:, 1] += 0.004 * torch.sin(torch.linspace(0, math.pi, 9))
    v, f = _tube(bridge, tube, 6)
    parts.append(_part("glasses", v, f, torch.full((len(v), 2), 0.5)))
    # temples: from the outer edge of each rim back along the side of the head to behind the ear
    side = skin[((skin[:, 1] - centre_y).abs() < 0.01)]
    for r in rims:
        sx = 1.0 if r[:, 0].mean() > 0 else -1.0
        hinge = r[(sx * r[:, 0]).argmax()]
        zs = torch.linspace(float(hinge[2]) - 0.004, -0.025, 10)
        pts = []
        for zk in zs:
            band = side[(side[:, 2] - zk).abs() < 0.006]
            half = float((sx * band[:, 0]).amax()) if len(band) else abs(float(hinge[0]))
            pts.append(torch.stack([torch.tensor(sx * (half + 0.003 + tube)), hinge[1], zk]))
        path = torch.cat([hinge[None], torch.stack(pts)])
        path[-2:, 1] -= torch.tensor([0.004, 0.012])          # hook down behind the ear
        v, f = _tube(path, tube, 6)
        parts.append(_part("glasses", v, f, torch.full((len(v), 2), 0.5)))
    return parts


def build_earrings(fr: _Frame, a: Appearance, g: torch.Generator) -> list[Extras]:
    """Studs (small spheres) or hoops (tori hanging from the lobe) on both ear lobes."""
    size = _u(g, 0.7, 1.3)
    if a.earrings == "none":
        return []
    skin = fr.rest[fr.skin]
    parts = []
    for sx in (1.0, -1.0):
        ear = skin[(sx * skin[:, 0] > 0.065) & (skin[:, 2].abs() < 0.03)]
        lobe = ear[ear[:, 1].argmin()] + torch.tensor([sx * 0.001, 0.004, 0.0])
        if a.earrings == "studs":
            v, f, uv = _ellipsoid(lobe + torch.tensor([sx * 0.0015, 0, 0]), (0.0022 * size,) * 3, 6, 10)
        else:
            ring_r = 0.008 * size
            t = torch.linspace(0, 2 * math.pi, 33)[:-1]
            ring = torch.stack([torch.full_like(t, sx * 0.0015), ring_r * (t.cos() - 1), ring_r * t.sin()], -1)
            path = lobe + ring                                                   # hangs below the lobe
            v, f = _tube(path, 0.0009, 6, closed=True)
        parts.append(_part("earrings", v, f, torch.full((len(v), 2), 0.5)))
    return parts


# ---------------------------------------------------------------------------------------------------
# 5. the identity
# ---------------------------------------------------------------------------------------------------

def sample_identity(seed: int, model: HeadModel, cfg: IdentityConfig = IdentityConfig()) -> Identity:
    """The procedural person of ``seed`` for ``model`` (the built-in head: it needs its vertex groups)."""
    g = torch.Generator().manual_seed(int(seed))
    appearance = sample_appearance(g, cfg.accessories)
    shape = sample_shape(g, model, appearance, cfg.shape_std)
    with torch.no_grad():
        fr = _frame(model, shape)
        T = cfg.texture_size
        texture = torch.cat([paint_head_texture(fr, appearance, g, T), paint_extras_texture(fr, appearance, g, T)], 1)
        extras = Extras.cat(build_hair(fr, appearance, g) + build_beard(fr, appearance, g)
                            + build_glasses(fr, appearance, g) + build_earrings(fr, appearance, g))
    return Identity(int(seed), appearance, shape, texture.contiguous(), extras)


def describe(identity: Identity) -> str:
    a = identity.appearance
    bits = [f"seed {identity.seed}", f"age {a.age:.0f}", f"skin {a.skin_tone:.2f}",
            f"{a.hair_color} {a.hair_style} hair", f"{a.eye_color} eyes"]
    bits += [f"{a.beard} beard"] if a.beard != "none" else []
    bits += [a.glasses] if a.glasses != "none" else []
    bits += [f"{a.earrings} earrings"] if a.earrings != "none" else []
    return ", ".join(bits)


__all__ = ["EVAL_SEEDS", "HAIR_STYLES", "BEARDS", "GLASSES", "EARRINGS", "PART_NAMES", "IdentityConfig",
           "Appearance", "Extras", "Identity", "sample_identity", "sample_appearance", "describe"]
