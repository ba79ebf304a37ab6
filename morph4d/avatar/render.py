"""Rendering a fitted avatar (MVP4D §4: the Gaussians are bound to the head mesh, so any expression and
pose sequence drives them): frames for given cameras (``render_avatar``) and ``morph4d render``'s MP4 from
a front or orbiting camera (``render_video``), framed like the demo (``morph4d.cameras.HEAD_CENTRE``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from morph4d.avatar.gaussians import render_gaussians
from morph4d.avatar.model import animation_params, load_avatar
from morph4d.cameras import HEAD_CENTRE, VIEW_FOV, VIEW_RADIUS, Cameras, orbit_cameras
from morph4d.errors import Morph4DError
from morph4d.heads import HeadParams
from morph4d.video import write_mp4


def render_avatar(out: str | Path, params: HeadParams, cameras: Cameras, head_model: str | None = None,
                  flame_path=None, fitted: bool = False) -> torch.Tensor:
    """Re-animate a fitted avatar: frame f of ``params`` (F frames) seen by camera f -> (F, H, W, 3).

    The Gaussians are bound to the mesh, so any expression/pose sequence drives them, including
    animations the avatar was never fitted on (no per-frame deformation: ``Avatar.world(frame=None)``).
    ``fitted``: ``params`` are the fitted sequence's frames, each rendered with its fitted deformation."""
    avatar = load_avatar(out, flame_path=flame_path)
    if head_model is not None and head_model != avatar.head.name:
        raise Morph4DError(f"the avatar in {out} is driven by the '{avatar.head.name}' head model, not '{head_model}'")
    frames = []
    with torch.no_grad():
        verts = avatar.vertices(params)
        for f in range(verts.shape[0]):
            w = avatar.world(verts[f], f if fitted else None)
            frames.append(render_gaussians(w.means, w.quats, w.scales, w.opacities, w.sh, cameras[[f]]).image[0])
    return torch.stack(frames)


ORBIT_AZIMUTH, ORBIT_ELEVATION = 60.0, 10.0  # degrees: the orbit sweeps MVP4D's 120-degree frontal range


def render_video(avatar_dir: str | Path, out: str | Path, animation: str = "talk", frames: int = 49, res: int = 256,
                 orbit: bool = False, flame_path=None) -> Path:
    """``morph4d render``: the avatar driven by ``animation`` (built-in name or .npz, any animation: no
    per-frame deformation), seen from the front or, with ``orbit``, from a camera sweeping +-60 degrees
    of azimuth (and +-10 of elevation) -> ``out`` (.mp4, written atomically). Bad input raises
    ``ValueError`` / ``FileNotFoundError`` before anything is written."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise Morph4DError(f"the output must be an .mp4 file, got '{out}'")
    if frames < 1 or not 16 <= res <= 2048:
        raise Morph4DError(f"need --frames >= 1 and --res in [16, 2048], got {frames} and {res}")
    avatar = load_avatar(avatar_dir, flame_path=flame_path)
    params, fitted, fps = animation_params(avatar, animation, frames)
    F = params.jaw.shape[0]
    phase = torch.arange(F, dtype=torch.float64) / F
    azimuth = ORBIT_AZIMUTH * torch.sin(2 * torch.pi * phase) if orbit else torch.zeros(F, dtype=torch.float64)
    elevation = ORBIT_ELEVATION * torch.sin(4 * torch.pi * phase) if orbit else torch.zeros(F, dtype=torch.float64)
    cams = orbit_cameras(azimuth, elevation, VIEW_RADIUS, VIEW_FOV, res, res, target=HEAD_CENTRE)
    video = render_avatar(avatar_dir, params, cams, flame_path=flame_path, fitted=fitted)
    write_mp4(out, video, fps=fps)
    return out


__all__ = ["ORBIT_AZIMUTH", "ORBIT_ELEVATION", "render_avatar", "render_video"]
