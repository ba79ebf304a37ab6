"""Head animations: per-frame expression, jaw, neck, eye and global pose parameters.

File format (``.npz``, plain arrays, no pickles; version 1):

    ============  =========  =====================================================================
    key           shape      meaning
    ============  =========  =====================================================================
    expression    (F, E)     expression coefficients of ``head_model``
    jaw           (F, 3)     jaw axis-angle (rad); FLAME's ``jaw_pose``
    neck          (F, 3)     neck axis-angle (rad); FLAME's ``neck_pose``
    eyes          (F, 6)     left then right eye axis-angles; FLAME's ``leye_pose``, ``reye_pose``
    rotation      (F, 3)     global axis-angle; FLAME's ``global_orient``   (optional, zeros)
    translation   (F, 3)     metres; FLAME's ``transl``                      (optional, zeros)
    shape         (S,)       identity, if the animation carries one          (optional)
    fps           ()         frames per second                               (optional, 25)
    head_model    ()         "builtin" or "flame": whose expression space    (required)
    version       ()         1
    ============  =========  =====================================================================

FLAME-style key names are accepted on load (``expr``, ``jaw_pose``, ``neck_pose``, ``global_orient``,
``transl``, ``leye_pose`` + ``reye_pose`` or ``eye_pose``), so a tracker's FLAME output loads as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.heads.base import HeadParams
from morph4d.heads.model import HeadModel
from morph4d.io import atomic_path
from morph4d.validate import check_finite, read_npz

FORMAT_VERSION = 1
MAX_FRAMES = 100_000   # ~67 minutes at 25 fps: a bound on what an animation file may ask the renderers for
MAX_FPS = 1000.0
NUMERIC_KEYS = {"shape", "expression", "jaw", "neck", "eyes", "rotation", "translation", "fps", "version",
                "leye_pose", "reye_pose"}
ALIASES = {"expr": "expression", "jaw_pose": "jaw", "neck_pose": "neck", "global_orient": "rotation",
           "transl": "translation", "eye_pose": "eyes", "betas": "shape"}
BUILTIN_ANIMATIONS = ("talk", "smile", "surprise", "head_turn")


@dataclass
class Animation:
    """A parameter sequence for one head model; ``params`` fields are ``(F, ...)`` (shape ``(S,)``)."""
    params: HeadParams
    fps: float
    head_model: str
    name: str = "animation"

    @property
    def num_frames(self) -> int:
        return self.params.jaw.shape[0]

    def check_model(self, model: HeadModel) -> None:
        """Raise ``ValueError`` unless this animation drives ``model`` (same model kind and sizes)."""
        if self.head_model != model.name:
            raise Morph4DError(f"animation '{self.name}' is for the '{self.head_model}' head model, but the "
                               f"head model in use is '{model.name}'")
        self.params.check(model.num_shape, model.num_expression)

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self.params, k).detach().cpu().numpy() for k in
                  ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation")}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, fps=np.array(self.fps), head_model=np.array(self.head_model),
                         version=np.array(FORMAT_VERSION), **arrays)


def load_animation(path: str | Path, model: HeadModel) -> Animation:
    """Load an animation file for ``model``; missing optional fields become zeros (see module doc)."""
    path = Path(path)
    raw = {ALIASES.get(k, k): v for k, v in read_npz(path, "animation file").items()}
    for k in NUMERIC_KEYS & set(raw):   # other keys (a tracker's metadata) are ignored
        if raw[k].dtype.kind not in "uif":
            raise Morph4DError(f"{path}: '{k}' must be numbers, got {raw[k].dtype}")
    if "version" in raw and (raw["version"].size != 1 or int(raw["version"].reshape(-1)[0]) != FORMAT_VERSION):
        raise Morph4DError(f"{path}: animation format version {raw['version'].tolist()} is unknown (this morph4d "
                           f"reads version {FORMAT_VERSION})")
    if "leye_pose" in raw and "reye_pose" in raw:
        raw["eyes"] = np.concatenate([raw.pop("leye_pose"), raw.pop("reye_pose")], axis=-1)
    missing = [k for k in ("expression", "jaw", "head_model") if k not in raw]
    if missing:
        raise Morph4DError(f"{path} lacks {missing}; an animation needs 'expression' (F, E), 'jaw' (F, 3) and "
                           f"'head_model', optionally 'neck', 'eyes', 'rotation', 'translation', 'shape', 'fps'")
    n = raw["jaw"].shape[0] if raw["jaw"].ndim == 2 else -1
    t = lambda k, width: torch.as_tensor(raw[k], dtype=torch.float32) if k in raw \
        else torch.zeros(max(n, 0), width)  # noqa: E731
    shape = torch.as_tensor(raw["shape"], dtype=torch.float32) if "shape" in raw else torch.zeros(model.num_shape)
    params = HeadParams(shape=shape, expression=t("expression", model.num_expression), jaw=t("jaw", 3),
                        neck=t("neck", 3), eyes=t("eyes", 6), rotation=t("rotation", 3),
                        translation=t("translation", 3))
    for k in ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation"):
        check_finite(getattr(params, k), k, str(path))
    fps = raw.get("fps", np.array(25.0))
    if fps.size != 1 or not np.isfinite(float(fps.reshape(-1)[0])) or not 0 < float(fps.reshape(-1)[0]) <= MAX_FPS:
        raise Morph4DError(f"{path}: fps must be one number in (0, {MAX_FPS}], got {fps.tolist()}")
    if not 1 <= max(n, 0) <= MAX_FRAMES:
        raise Morph4DError(f"{path}: an animation needs 1 to {MAX_FRAMES} frames (jaw (F, 3)), got "
                           f"{tuple(raw['jaw'].shape)}")
    anim = Animation(params, float(fps.reshape(-1)[0]), str(raw["head_model"]), path.stem)
    try:
        anim.check_model(model)
    except ValueError as e:
        raise Morph4DError(f"{path}: {e}") from e
    return anim


# ------------------------------------------------------------------------------------------------
# built-in animations
# ------------------------------------------------------------------------------------------------

def _smooth_pulse(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    """0 -> 1 -> 0 with cosine ramps of length ``ramp`` (all in seconds)."""
    up = np.clip((t - start) / ramp, 0, 1)
    down = np.clip((end - t) / ramp, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def _blinks(t: np.ndarray, times) -> np.ndarray:
    """A blink (0.25 s, closed at its middle) at each time."""
    return sum(_smooth_pulse(t, s, s + 0.25, 0.12) for s in times)


def builtin_animation(name: str, model: HeadModel, num_frames: int = 49, fps: float = 25.0) -> Animation:
    """One of BUILTIN_ANIMATIONS for ``model``, ``num_frames`` long.

    Expressions are set by name on the built-in head; on FLAME (whose expression components are PCA
    directions without names) the animation keeps its jaw, eye and head motion and a zero expression.
    """
    if name not in BUILTIN_ANIMATIONS:
        raise Morph4DError(f"unknown animation '{name}'; built-in animations are {', '.join(BUILTIN_ANIMATIONS)}")
    if num_frames < 1:
        raise Morph4DError(f"num_frames must be >= 1, got {num_frames}")
    t = np.arange(num_frames) / fps
    T = max(t[-1], 1e-6)
    p = {k: np.zeros((num_frames, n)) for k, n in
         (("expression", model.num_expression), ("jaw", 3), ("neck", 3), ("eyes", 6))}
    names = model.expression_names

    def expr(key: str, values: np.ndarray) -> None:
        if key in names:
            p["expression"][:, names.index(key)] += values

    if name == "talk":
        # syllables: jaw opening at ~4 Hz with varying amplitude, alternating lip shapes, small nods
        syll = np.clip(np.sin(2 * np.pi * 4.1 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.9 * t + 1)), 0, None)
        p["jaw"][:, 0] = 0.22 * syll
        expr("lip_funnel", 0.6 * np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None) * syll)
        expr("mouth_stretch", 0.5 * np.clip(np.sin(2 * np.pi * 1.3 * t + np.pi), 0, None))
        expr("brow_raise", 0.4 * _smooth_pulse(t, 0.2 * T, 0.6 * T, 0.2 * T))
        p["neck"][:, 0] = 0.05 * np.sin(2 * np.pi * 0.7 * t)
        p["neck"][:, 1] = 0.06 * np.sin(2 * np.pi * 0.35 * t)
        blink = _blinks(t, [0.55 * T])
    elif name == "smile":
        s = _smooth_pulse(t, 0.1 * T, 1.5 * T, 0.5 * T)
        expr("smile", 1.0 * s)
        expr("cheek_raise", 0.8 * s)
        expr("squint", 0.35 * s)
        p["jaw"][:, 0] = 0.04 * s
        p["neck"][:, 2] = 0.08 * s
        blink = _blinks(t, [0.8 * T])
    elif name == "surprise":
        s = _smooth_pulse(t, 0.15 * T, 1.5 * T, 0.3 * T)
        expr("brow_raise", 1.0 * s)
        expr("brow_inner_up", 0.6 * s)
        expr("eyes_wide", 0.9 * s)
        expr("lip_funnel", 0.4 * s)
        p["jaw"][:, 0] = 0.28 * s
        p["neck"][:, 0] = -0.08 * s
        blink = np.zeros_like(t)
    else:  # head_turn: yaw from -35 to +35 degrees and back, eyes lead the head
        phase = 2 * np.pi * t / T
        yaw = math.radians(35) * np.sin(phase)
        p["neck"][:, 1] = yaw
        p["neck"][:, 0] = 0.08 * np.sin(2 * phase)
        p["eyes"][:, 1] = p["eyes"][:, 4] = 0.25 * np.sin(phase + 0.6)
        blink = _blinks(t, [0.3 * T, 0.75 * T])
    expr("blink_left", np.clip(blink, 0, 1))
    expr("blink_right", np.clip(blink, 0, 1))
    f = lambda k: torch.as_tensor(p[k], dtype=torch.float32)  # noqa: E731
    params = HeadParams(shape=torch.zeros(model.num_shape), expression=f("expression"), jaw=f("jaw"),
                        neck=f("neck"), eyes=f("eyes"), rotation=torch.zeros(num_frames, 3),
                        translation=torch.zeros(num_frames, 3))
    return Animation(params, fps, model.name, name)


def get_animation(name_or_path: str, model: HeadModel, num_frames: int = 49, fps: float = 25.0) -> Animation:
    """A built-in animation by name, or an animation file by path."""
    if name_or_path in BUILTIN_ANIMATIONS:
        return builtin_animation(name_or_path, model, num_frames, fps)
    if name_or_path.endswith(".npz") or Path(name_or_path).exists():
        return load_animation(name_or_path, model)
    raise Morph4DError(f"'{name_or_path}' is neither a built-in animation ({', '.join(BUILTIN_ANIMATIONS)}) "
                       f"nor an animation .npz file")
