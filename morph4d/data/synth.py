"""Synthetic multi-view head video datasets: identities x animations x camera rigs, rendered with exact
ground truth (images, alpha mattes, per-frame head parameters, cameras, head crops).

The four modalities of MVP4D's training curriculum (§3.3, Table 2; S2.2), with our camera rigs:

=================  ======================  ==============================================================
modality           like                    cameras (per sequence, random)                    default V x F
=================  ======================  ==============================================================
monocular          VFHQ (talking heads)    1 view, azimuth +-30, elevation -10..20               1 x 49
multiview_video    Nersemble (frontal)     V views over azimuth +-80, elevation -15..30          16 x 49
multiview_images   Ava-256 (360, 1 frame)  V views all round, elevation -35..70                  24 x 1
multiview_360      RenderMe-360            V views all round incl. the top, elevation -30..90   24 x 49
=================  ======================  ==============================================================

Every sequence is a pure function of (identity seed, sequence index, modality): its generator seed is
a SHA-256 mix of the three, so runs are reproducible, resumable and independent of order. Seeds in
``EVAL_SEEDS`` (900000-900099) are the held-out identities: ``split="eval"`` uses only them, and
``split="train"`` refuses them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from morph4d.cameras import VIEW_FOV, Cameras, head_crop_boxes, orbit_cameras
from morph4d.data.format import (
    MODALITIES,
    SequenceWriter,
    check_modality,
    finished_sequences,
    mix_seed,
    read_index,
    remove_partials,
    write_index,
)
from morph4d.data.identity import EVAL_SEEDS, IdentityConfig, describe, sample_identity
from morph4d.data.scene import RenderConfig, make_scene, render_sequence, sample_lighting
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams
from morph4d.heads.animation import BUILTIN_ANIMATIONS, builtin_animation
from morph4d.heads.builtin import load_builtin_head
from morph4d.threads import torch_threads
from morph4d.video import grid

MODALITY_DEFAULTS = {"monocular": (1, 49), "multiview_video": (16, 49), "multiview_images": (24, 1),
                     "multiview_360": (24, 49)}
SPLITS = ("train", "eval")
HEAD_TARGET = (0.0, -0.02, 0.0)   # look-at point: between the ears, a little below the eyes (m)
HEAD_EXTENT = 0.30                # crown to upper neck (m): the part of the head a crop frames
CROP_SCALE = 1.25                 # MVP4D S2.1: crops 25% larger than the tight head box


@dataclass(frozen=True)
class SynthConfig:
    """``morph4d data synth``; ``resolved()`` fills the modality's defaults. Written to dataset.json."""
    out: str = "out/synth"
    identities: int = 10
    modality: str = "multiview_video"
    views: int | None = None              # default per modality (MODALITY_DEFAULTS)
    frames: int | None = None
    resolution: int = 256
    split: str = "train"
    first_seed: int | None = None         # default 0 (train) or EVAL_SEEDS.start (eval)
    sequences_per_identity: int = 1
    fps: float = 25.0
    texture_size: int | None = None       # default: by resolution (256 up to 128 px, 512 up to 320, else 1024)
    supersample: int = 2
    crop_smooth_sigma: float = 2.0        # frames; temporal Gaussian on crop centre and size (MVP4D S2.1)
    torch_threads: int = 1                # per-pixel ops on small images: more threads cost more in sync
                                          # than they save (numba's rasterizer still uses every core)
    progress: bool = True

    def resolved(self) -> "SynthConfig":
        check_modality(self.modality)
        views, frames = MODALITY_DEFAULTS[self.modality]
        tex = 256 if self.resolution <= 128 else 512 if self.resolution <= 320 else 1024
        return replace(self, views=self.views if self.views is not None else views,
                       frames=self.frames if self.frames is not None else frames,
                       first_seed=self.first_seed if self.first_seed is not None else
                       (EVAL_SEEDS.start if self.split == "eval" else 0),
                       texture_size=self.texture_size or tex)

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad option (call on ``resolved()``)."""
        check_modality(self.modality)
        if self.split not in SPLITS:
            raise Morph4DError(f"--split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        for name in ("identities", "views", "frames", "resolution", "sequences_per_identity", "supersample",
                     "torch_threads"):
            if getattr(self, name) < 1:
                raise Morph4DError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.resolution < 16:
            raise Morph4DError(f"--res must be >= 16 pixels, got {self.resolution}")
        if self.modality == "monocular" and self.views != 1:
            raise Morph4DError(f"modality monocular has exactly 1 view, got --views {self.views}")
        if self.modality == "multiview_images" and self.frames != 1:
            raise Morph4DError(f"modality multiview_images has 1 frame per sequence (like Ava-256), got --frames "
                               f"{self.frames}")
        if self.modality in ("multiview_video", "multiview_360", "multiview_images") and self.views < 2:
            raise Morph4DError(f"modality {self.modality} needs --views >= 2, got {self.views}")
        if self.fps <= 0 or self.crop_smooth_sigma < 0:
            raise Morph4DError("--fps must be > 0 and the crop smoothing >= 0")
        seeds = range(self.first_seed, self.first_seed + self.identities)
        held_out = [s for s in seeds if s in EVAL_SEEDS]
        if self.split == "train" and held_out:
            raise Morph4DError(f"seeds {held_out[0]}..{held_out[-1]} are held-out evaluation identities "
                               f"({EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}); use --split eval for them")
        if self.split == "eval" and len(held_out) != len(seeds):
            raise Morph4DError(f"--split eval uses only the held-out seeds {EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}; "
                               f"seeds {seeds.start}..{seeds.stop - 1} leave that range")

    def dataset_settings(self) -> dict:
        """The settings every sequence of one dataset folder must share (all but the identity count)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "identities", "progress", "torch_threads")}


def sequence_name(seed: int, index: int) -> str:
    return f"id{seed:06d}_{index:02d}"


# ---------------------------------------------------------------------------------------------------
# 1. camera rigs
# ---------------------------------------------------------------------------------------------------

def _fibonacci(n: int, el_lo: float, el_hi: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n roughly uniform directions on the sphere band el_lo..el_hi (deg), randomly rotated and jittered."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    s_lo, s_hi = math.sin(math.radians(el_lo)), math.sin(math.radians(el_hi))
    el = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * k / n))
    az = (k * 180.0 * (3.0 - math.sqrt(5.0)) + 360.0 * torch.rand((), generator=g, dtype=torch.float64)) % 360.0
    jitter = 4.0 * (torch.rand(2, n, generator=g, dtype=torch.float64) - 0.5)
    return az - 180.0 + jitter[0], (el + jitter[1]).clamp(el_lo, el_hi)


def camera_rig(modality: str, num_views: int, resolution: int, g: torch.Generator) -> tuple[Cameras, list[str]]:
    """Static cameras of one sequence looking at the head, framed so the head crop fills ~90% of the image."""
    def r(lo: float, hi: float, n: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    if modality == "monocular":
        az, el = r(-30, 30, 1), r(-10, 20, 1)
    elif modality == "multiview_video":  # a frontal arc in two staggered rows, like Nersemble's 16 cameras
        az = torch.linspace(-80, 80, num_views, dtype=torch.float64) + r(-4, 4, num_views)
        el = torch.where(torch.arange(num_views) % 2 == 0, r(-15, 5, num_views), r(10, 30, num_views))
    elif modality == "multiview_images":
        az, el = _fibonacci(num_views, -35.0, 70.0, g)
    else:
        az, el = _fibonacci(num_views, -30.0, 90.0, g)
    distance = r(0.85, 1.3, num_views)
    zoom = r(0.85, 1.05, num_views) if modality == "monocular" else r(0.95, 1.05, num_views)
    fov = 2 * torch.rad2deg(torch.atan(CROP_SCALE * HEAD_EXTENT / 0.9 / 2 / distance)) * zoom
    target = torch.tensor(HEAD_TARGET, dtype=torch.float64) + r(-0.005, 0.005, 3)
    cams = [orbit_cameras(az[i:i + 1], el[i:i + 1], float(distance[i]), float(fov[i]), resolution, resolution,
                          target=tuple(target.tolist())) for i in range(num_views)]
    return Cameras.cat(cams), [f"cam{i:02d}" for i in range(num_views)]


# ---------------------------------------------------------------------------------------------------
# 2. animations
# ---------------------------------------------------------------------------------------------------

def smooth_noise(g: torch.Generator, num_frames: int, channels: int, sigma_frames: float) -> torch.Tensor:
    """``(F, C)`` Gaussian-filtered white noise with unit standard deviation per frame (F = 1: plain randn)."""
    if num_frames == 1 or sigma_frames < 0.5:
        return torch.randn(num_frames, channels, generator=g)
    r = int(3 * sigma_frames + 0.5)
    white = torch.randn(channels, 1, num_frames + 2 * r, generator=g)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma_frames) ** 2)
    k = k / k.norm()                       # unit L2 norm keeps the variance of white noise
    return F.conv1d(white, k.view(1, 1, -1))[:, 0].T.contiguous()


def random_animation(model: HeadModel, num_frames: int, fps: float, g: torch.Generator) -> tuple[HeadParams, str]:
    """Smooth random expression, jaw, eye and head-pose motion (or a built-in animation with head motion).

    Returns per-frame params (shape zeros, set by the caller) and a name. Expressions: 2-6 active
    components with smooth non-negative activations; blinks at random times; jaw either smooth or
    speech-like (~4 Hz syllables); eyes saccade between fixation targets; the head turns on the neck
    (yaw up to +-40 deg, pitch +-20, roll +-12) and sways a little globally.
    """
    Fr, E = num_frames, model.num_expression
    names = model.expression_names
    sec = lambda s: s * fps  # noqa: E731
    r = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    use_builtin = r(0, 1) < 0.25 and Fr > 1
    which = BUILTIN_ANIMATIONS[int(torch.randint(len(BUILTIN_ANIMATIONS), (), generator=g))]
    expression = torch.zeros(Fr, E)
    active = torch.randperm(E, generator=g)[: int(torch.randint(2, 7, (), generator=g))]
    amp = 0.3 + 0.7 * torch.rand(len(active), generator=g)
    act = smooth_noise(g, Fr, len(active), sec(r(0.25, 0.8)))
    expression[:, active] = (act * 0.8 + r(-0.3, 0.3)).clamp(min=0) * amp
    speech = r(0, 1) < 0.5
    syll = (torch.sin(2 * math.pi * r(3.0, 5.0) * torch.arange(Fr) / fps + r(0, 6.3)).clamp(min=0)
            * (0.5 + 0.5 * smooth_noise(g, Fr, 1, sec(0.5))[:, 0].clamp(-1, 1)))
    jaw_open = r(0.05, 0.3) * (syll if speech else (smooth_noise(g, Fr, 1, sec(0.6))[:, 0] * 0.7 + 0.3).clamp(0, 1))
    blink = torch.zeros(Fr)
    t_blink = r(0.2, 2.0)
    while t_blink * fps < Fr:
        t = torch.arange(Fr) / fps
        blink = torch.maximum(blink, torch.exp(-0.5 * ((t - t_blink) / 0.06) ** 2))
        t_blink += r(1.5, 5.0)
    for side in ("blink_left", "blink_right"):
        if side in names:
            expression[:, names.index(side)] = torch.maximum(expression[:, names.index(side)], blink)
    # eyes: fixations held 0.3-1.5 s, each a yaw/pitch target, with 2-frame transitions
    gaze = torch.zeros(Fr, 2)
    start = 0
    while start < Fr:
        length = max(1, int(sec(r(0.3, 1.5))))
        gaze[start:start + length] = torch.tensor([r(-0.3, 0.3), r(-0.15, 0.15)])
        start += length
    if Fr > 2:
        gaze = F.avg_pool1d(F.pad(gaze.T[None], (1, 1), mode="replicate"), 3, 1)[0].T
    eyes = torch.cat([gaze[:, 1:2], gaze[:, 0:1], torch.zeros(Fr, 1)], -1).repeat(1, 2)  # pitch about x, yaw about y
    head = smooth_noise(g, Fr, 3, sec(r(0.5, 1.5))) * torch.tensor([r(0.05, 0.35), r(0.1, 0.7), r(0.02, 0.2)])
    neck = head.clamp(torch.tensor([-0.35, -0.7, -0.2]), torch.tensor([0.35, 0.7, 0.2]))
    rotation = smooth_noise(g, Fr, 3, sec(1.5)) * 0.03
    translation = smooth_noise(g, Fr, 3, sec(1.5)) * 0.006
    jaw = torch.zeros(Fr, 3)
    jaw[:, 0] = jaw_open
    params = HeadParams(shape=torch.zeros(model.num_shape), expression=expression, jaw=jaw, neck=neck, eyes=eyes,
                        rotation=rotation, translation=translation)
    if use_builtin:   # a scripted performance, with this sequence's head motion added
        scripted = builtin_animation(which, model, Fr, fps).params
        params = scripted.replace(neck=scripted.neck + 0.5 * neck, rotation=rotation, translation=translation)
        return params, which
    return params, "random"


# ---------------------------------------------------------------------------------------------------
# 3. sequences
# ---------------------------------------------------------------------------------------------------

def crop_vertices(model: HeadModel) -> torch.Tensor:
    """Vertices whose projections define the head crop: all but the neck more than 10 cm below the lips.

    FLAME's neck ends about there; the built-in head's runs 5 cm further, which would shrink the face
    in every crop. Models without a ``lips`` group use every vertex.
    """
    if "lips" not in model.vertex_groups:
        return torch.arange(model.num_vertices)
    floor = float(model.template[model.vertex_groups["lips"], 1].min()) - 0.10
    return torch.nonzero(model.template[:, 1] >= floor)[:, 0]


def head_crops(model: HeadModel, params: HeadParams, cameras: Cameras, smooth_sigma: float,
               scale: float = CROP_SCALE) -> torch.Tensor:
    """MVP4D S2.1 head crops of every view and frame, ``(V, F, 4)``, smoothed over frames per view."""
    with torch.no_grad():
        verts = model(params)[:, crop_vertices(model)]                    # (F, n, 3)
    boxes = []
    for v in range(len(cameras)):
        uv = cameras[v].project(verts.reshape(-1, 3))[0, :, :2].reshape(verts.shape[0], -1, 2)
        boxes.append(head_crop_boxes(uv, scale, smooth_sigma if verts.shape[0] > 1 else None))
    return torch.stack(boxes)


@dataclass
class SynthSequence:
    """Everything of one rendered sequence (what ``write_synth_sequence`` stores)."""
    name: str
    meta: dict
    cameras: Cameras
    params: HeadParams
    boxes: torch.Tensor
    images: torch.Tensor      # (V, F, H, W, 3)
    alpha: torch.Tensor       # (V, F, H, W)


def make_sequence(model: HeadModel, cfg: SynthConfig, seed: int, index: int) -> SynthSequence:
    """Render sequence ``index`` of identity ``seed`` under ``cfg`` (resolved), with ``cfg.torch_threads``."""
    with torch_threads(cfg.torch_threads):
        return _make_sequence(model, cfg, seed, index)


def _make_sequence(model: HeadModel, cfg: SynthConfig, seed: int, index: int) -> SynthSequence:
    identity = sample_identity(seed, model, IdentityConfig(texture_size=cfg.texture_size))
    g = torch.Generator().manual_seed(mix_seed("sequence", seed, index, cfg.modality))
    lighting = sample_lighting(g)
    cameras, view_names = camera_rig(cfg.modality, cfg.views, cfg.resolution, g)
    params, animation = random_animation(model, cfg.frames, cfg.fps, g)
    params = params.replace(shape=identity.shape.clone())
    scene = make_scene(model, identity, cfg.resolution, RenderConfig(supersample=cfg.supersample))
    images, alpha = render_sequence(scene, params, cameras, lighting, RenderConfig(supersample=cfg.supersample))
    boxes = head_crops(model, params, cameras, cfg.crop_smooth_sigma)
    name = sequence_name(seed, index)
    meta = {"modality": cfg.modality, "source": "synthetic", "head_model": model.name, "fps": cfg.fps,
            "identity_seed": seed, "sequence_index": index, "split": cfg.split, "animation": animation,
            "identity": identity.appearance.to_json(), "description": describe(identity),
            "lighting": lighting.to_json(), "views": view_names}
    return SynthSequence(name, meta, cameras, params, boxes, images, alpha)


def write_synth_sequence(root: str | Path, seq: SynthSequence, smooth_sigma: float) -> Path:
    """Store a rendered sequence atomically (``format.SequenceWriter``)."""
    V, Fr, H, W = seq.alpha.shape
    with SequenceWriter(root, seq.name, seq.meta["views"], Fr, W, H) as writer:
        for v in range(V):
            for f in range(Fr):
                writer.write_frame(v, f, seq.images[v, f], seq.alpha[v, f])
        return writer.finish(seq.meta, seq.cameras, seq.params, seq.boxes, CROP_SCALE, smooth_sigma)


def synthesize(cfg: SynthConfig, model: HeadModel | None = None, log=print) -> list[str]:
    """Render the dataset of ``cfg`` into ``cfg.out``; finished sequences are skipped (resumable).

    Returns the names of the sequences written by this call. ``dataset.json`` records the settings; a
    folder made with other settings is refused rather than mixed.
    """
    cfg = cfg.resolved()
    cfg.check()
    model = model or load_builtin_head()
    root = Path(cfg.out)
    if root.exists() and not root.is_dir():
        raise Morph4DError(f"--out {root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    settings = cfg.dataset_settings()
    if (root / "dataset.json").exists():
        old = read_index(root).get("synth")
        if old is None or {k: old.get(k) for k in settings} != settings:
            diff = sorted(k for k in settings if old is None or old.get(k) != settings[k])
            raise Morph4DError(f"{root} holds a dataset made with other settings ({', '.join(diff)}); "
                               f"use another --out or the same settings to resume")
    elif any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise Morph4DError(f"--out {root} is a non-empty folder without dataset.json; refusing to write into it")
    stale = remove_partials(root)
    if stale:
        log(f"removed {len(stale)} unfinished sequence(s) of an interrupted run")
    info = {"source": "synthetic", "head_model": model.name, "synth": settings}
    write_index(root, info)
    todo = [(seed, k) for seed in range(cfg.first_seed, cfg.first_seed + cfg.identities)
            for k in range(cfg.sequences_per_identity)]
    done = set(finished_sequences(root))
    pending = [(s, k) for s, k in todo if sequence_name(s, k) not in done]
    log(f"{len(todo) - len(pending)} of {len(todo)} sequences already finished in {root}")
    from tqdm import tqdm
    written = []
    with tqdm(total=len(todo), initial=len(todo) - len(pending), disable=not cfg.progress, unit="seq",
              desc=f"synth {cfg.modality}") as bar:
        for seed, k in pending:
            seq = make_sequence(model, cfg, seed, k)
            write_synth_sequence(root, seq, cfg.crop_smooth_sigma)
            write_index(root, info)
            written.append(seq.name)
            bar.update(1)
    return written


def identity_sheet(model: HeadModel, seeds, size: int = 192, cols: int = 4, azimuth: float = 25.0,
                   texture_size: int = 512) -> torch.Tensor:
    """A contact sheet of identities ``(rows*size, cols*size, 3)``: each seed in a 3/4 view, neutral pose,
    with its own sequence lighting (``morph4d data sheet``; docs/synthetic_identities.png)."""
    tiles = []
    with torch_threads(1):
        for seed in seeds:
            identity = sample_identity(seed, model, IdentityConfig(texture_size=texture_size))
            g = torch.Generator().manual_seed(mix_seed("sheet", seed))
            lighting = sample_lighting(g)
            az = azimuth if seed % 2 == 0 else -azimuth
            cams = orbit_cameras(torch.tensor([az]), torch.tensor([8.0]), 0.95, VIEW_FOV, size, size, target=HEAD_TARGET)
            params = model.zero_params((1,)).replace(shape=identity.shape)
            image, _ = render_sequence(make_scene(model, identity, size), params, cams, lighting)
            tiles.append(image[0, 0])
    return grid(torch.stack(tiles), cols)


__all__ = ["MODALITIES", "MODALITY_DEFAULTS", "SynthConfig", "SynthSequence", "camera_rig", "random_animation",
           "smooth_noise", "make_sequence", "write_synth_sequence", "synthesize", "head_crops", "crop_vertices",
           "sequence_name", "identity_sheet"]
