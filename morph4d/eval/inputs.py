"""What ``morph4d eval`` compares: a ground-truth sequence and the runs scored against it.

* **Ground truth**: a dataset sequence (format v1, docs/DATA.md: synthetic or imported Nersemble /
  RenderMe-360 / Ava-256): V static cameras x F frames of RGBA images, the head parameters of every frame.
  The alpha is the matte of MVP4D's masked metrics; a sequence without one (every pixel opaque) is refused.
* **A run**, one of:
  - a ``morph4d generate`` folder (``manifest.json``): its views are matched to the ground truth's by camera;
  - a dataset sequence of the same cameras (how baselines and other methods' renders come in);
  - a fitted avatar folder (``avatar.safetensors``): rendered here at the ground truth's cameras, driven by the
    ground truth's head parameters (self-reenactment: MVP4D gives every method the true 3DMM, S3.1).
  Views, frames and resolution must be the ground truth's; anything else is refused, naming both.

The angle of a view is its angular distance from the reference camera, as seen from the head (the root joint
at frame 0): from ``--reference-view``, else the ground truth's ``meta.json`` "reference" {azimuth, elevation}
(the synthetic benchmark writes it), else the view nearest the face's front (said in the report).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from morph4d.cameras import Cameras, angular_distance
from morph4d.data.format import read_sequence, select_frames
from morph4d.errors import Morph4DError
from morph4d.generation.videos import is_generated, read_videos
from morph4d.heads import HeadModel, HeadParams, load_head_model

CAMERA_TOLERANCE = 1e-3   # metres / unitless: two cameras are the same view when R, t and K/width agree to this


@dataclass
class Truth:
    name: str
    images: torch.Tensor       # (V, F, 3, H, W) over white
    alpha: torch.Tensor        # (V, F, 1, H, W)
    cameras: Cameras
    params: HeadParams
    model: HeadModel
    fps: float
    views: list[str]
    centre: torch.Tensor       # (3,) the head's root joint at frame 0, world
    angles: torch.Tensor       # (V,) degrees from the reference camera
    reference: str             # how the reference direction was found
    reference_index: int       # the view nearest the reference direction (the reference projection's source)


def view_angles(cameras: Cameras, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuth / elevation (degrees) of every camera seen from ``centre`` (+z = the face's front, +y up)."""
    c = (cameras.centers - centre).double()
    az = torch.rad2deg(torch.atan2(c[:, 0], c[:, 2]))
    el = torch.rad2deg(torch.asin((c[:, 1] / c.norm(dim=-1)).clamp(-1, 1)))
    return az, el


def read_truth(path, reference_view: str | None = None, flame_path=None) -> Truth:
    path = Path(path)
    seq = read_sequence(path)
    model = load_head_model(seq.meta["head_model"], flame_path=flame_path)
    rgb, alpha = seq.read_images(range(seq.num_views), range(seq.num_frames))
    if bool((alpha >= 1).all()):
        raise Morph4DError(f"ground truth {path}: its images have no matte (every pixel opaque); MVP4D's masked "
                           f"metrics need the foreground alpha in the PNGs (import the dataset with its masks)")
    params = seq.params
    with torch.no_grad():
        centre = model.joints(select_frames(params, [0])).reshape(-1, 3)[0]
    az, el = view_angles(seq.cameras, centre)
    views = list(seq.meta["views"])
    if reference_view is not None:
        if reference_view not in views:
            raise Morph4DError(f"--reference-view '{reference_view}' is not a view of {path} (views: {views})")
        i = views.index(reference_view)
        ref_az, ref_el, how = az[i], el[i], f"view {reference_view}"
    elif isinstance(seq.meta.get("reference"), dict):
        ref_az = torch.tensor(float(seq.meta["reference"]["azimuth"]), dtype=torch.float64)
        ref_el = torch.tensor(float(seq.meta["reference"]["elevation"]), dtype=torch.float64)
        how = f"meta.json reference (azimuth {float(ref_az):.0f}, elevation {float(ref_el):.0f})"
    else:
        front = torch.zeros((), dtype=az.dtype)
        i = int(angular_distance(az, el, front, front).argmin())
        ref_az, ref_el, how = az[i], el[i], f"view {views[i]} (nearest the face's front; no reference given)"
    angles = angular_distance(az, el, ref_az, ref_el).float()
    return Truth(seq.name, rgb.permute(0, 1, 4, 2, 3), alpha[:, :, None], seq.cameras, params, model,
                 float(seq.meta["fps"]), views, centre, angles, how, int(angles.argmin()))


def first_frames(truth: Truth, n: int) -> Truth:
    """The ground truth cut to its first ``n`` frames (a shorter run, e.g. one generation window)."""
    if not 1 <= n <= truth.images.shape[1]:
        raise Morph4DError(f"cannot cut the ground truth {truth.name} ({truth.images.shape[1]} frames) to {n} frames")
    return replace(truth, images=truth.images[:, :n], alpha=truth.alpha[:, :n],
                   params=select_frames(truth.params, list(range(n))))


def _same_camera(a: Cameras, i: int, b: Cameras, j: int) -> bool:
    ka = a.K[i] / a.width
    kb = b.K[j] / b.width
    return bool((a.R[i] - b.R[j]).abs().max() < CAMERA_TOLERANCE and (a.t[i] - b.t[j]).abs().max() < CAMERA_TOLERANCE
                and (ka - kb).abs().max() < CAMERA_TOLERANCE)


def match_views(name: str, cameras: Cameras, truth: Truth) -> list[int]:
    """For each ground-truth view, the run's view with the same camera; refused unless both sets agree."""
    if len(cameras) != len(truth.cameras):
        raise Morph4DError(f"run '{name}' has {len(cameras)} views but the ground truth has {len(truth.cameras)}: "
                           f"evaluate outputs made for the ground truth's cameras")
    order = []
    for i in range(len(truth.cameras)):
        hit = [j for j in range(len(cameras)) if _same_camera(truth.cameras, i, cameras, j)]
        if not hit:
            raise Morph4DError(f"run '{name}': no view has the camera of ground-truth view '{truth.views[i]}' "
                               f"(cameras must agree to {CAMERA_TOLERANCE})")
        order.append(hit[0])
    return order


def _check_size(name: str, images: torch.Tensor, truth: Truth) -> None:
    V, F, _, H, W = truth.images.shape
    if images.shape[1] != F:
        raise Morph4DError(f"run '{name}' has {images.shape[1]} frames but the ground truth has {F}")
    if tuple(images.shape[-2:]) != (H, W):
        raise Morph4DError(f"run '{name}' is {images.shape[-1]}x{images.shape[-2]} px but the ground truth is "
                           f"{W}x{H} px")


def read_run(name: str, path, truth: Truth, flame_path=None) -> tuple[torch.Tensor, str]:
    """The run's frames ``(V, F, 3, H, W)`` in the ground truth's view order, and its kind."""
    path = Path(path)
    if not path.exists():
        raise Morph4DError(f"run '{name}': {path} does not exist")
    if is_generated(path):
        gen = read_videos(path)
        order = match_views(name, gen.cameras, truth)
        images, kind = gen.images[order], "generated"
    elif (path / "avatar.safetensors").is_file():
        from morph4d.avatar.render import render_avatar
        frames = []
        F = truth.params.jaw.shape[0]
        for v in range(len(truth.cameras)):
            cams = Cameras.cat([truth.cameras[[v]]] * F)
            frames.append(render_avatar(path, truth.params, cams, truth.model.name, flame_path=flame_path))
        images, kind = torch.stack(frames).permute(0, 1, 4, 2, 3).clamp(0, 1), "avatar"
    elif (path / "meta.json").is_file():
        seq = read_sequence(path)
        order = match_views(name, seq.cameras, truth)
        rgb, _ = seq.read_images(order, range(seq.num_frames))
        images, kind = rgb.permute(0, 1, 4, 2, 3), "sequence"
    else:
        raise Morph4DError(f"run '{name}': {path} is neither a `morph4d generate` folder (manifest.json), a dataset "
                           f"sequence (meta.json) nor a fitted avatar (avatar.safetensors)")
    _check_size(name, images, truth)
    return images.float(), kind


__all__ = ["CAMERA_TOLERANCE", "Truth", "view_angles", "read_truth", "first_frames", "match_views", "read_run"]
