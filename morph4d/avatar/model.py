"""A fitted 4D avatar as one object: bound Gaussians + the head model that drives them + the per-frame UV
deformation U-Net (MVP4D §4, S2.4).

Written by ``morph4d fit`` into its folder (``avatar.safetensors``). Everything downstream of fitting
(evaluation, render, re-animation, export, viewer) reads it through ``load_avatar`` and places the
Gaussians with ``Avatar.world``, the one place where the mesh and (when fitted) the per-frame
deformation are applied.

Re-animation: ``frame`` is an index into the FITTED sequence; ``frame=None`` (any animation the avatar was
not fitted on) places the Gaussians from the mesh alone.

Deformation (our choice of MVP4D's "per-frame deformations"): the U-Net's map has ``DEFORM_CHANNELS = 6``
channels, read at each Gaussian's triangle UV centroid: a position offset (3, added to the local mean,
so in the triangle frame and in units of the triangle scale k: it follows the head when it turns) and a
rotation offset (3, axis-angle in the triangle frame, applied after the Gaussian's own rotation). Scales
and colours are not deformed. The rotation channels give MVP4D's rotation velocity term something to act
on: without them a Gaussian's rotation relative to its triangle never changes between frames.

File layout, ``format_version`` 2: the ``BoundGaussians`` tensors by field name, the U-Net's state dict
under the prefix ``deform.`` (absent when fitted without deformation), the fitted sequence's
``HeadParams`` under ``fitted.`` (its ``shape`` is the person's: re-animations use it); metadata ``format_version``,
``head_model``, ``num_frames`` and, with a U-Net, ``deform_config`` (JSON of ``DeformationUNetConfig``).
Version 1 (before the U-Net, no metadata version) is refused with a message to refit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from morph4d.avatar.gaussians import BoundGaussians, WorldGaussians, quaternion_multiply
from morph4d.avatar.gaussians.deform import DeformationUNet, DeformationUNetConfig, gaussian_uvs, sample_uv
from morph4d.errors import InputNotFoundError, Morph4DError
from morph4d.heads import HeadModel, HeadParams, load_head_model
from morph4d.heads.animation import get_animation
from morph4d.io import atomic_path
from morph4d.validate import check_finite

AVATAR_FILE = "avatar.safetensors"
AVATAR_VERSION = "2"
DEFORM_PREFIX = "deform."
FITTED_PREFIX = "fitted."  # the fitted sequence's head parameters (HeadParams fields), F frames
DEFORM_CHANNELS = 6  # position offset (3, triangle units) + rotation offset (3, axis-angle, triangle frame)


def axis_angle_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` -> unit quaternions wxyz ``(..., 4)``; smooth at zero (sinc form)."""
    half = 0.5 * r.norm(dim=-1, keepdim=True)
    return torch.cat([half.cos(), 0.5 * r * torch.sinc(half / torch.pi)], dim=-1)


def deform_gaussians(bound: BoundGaussians, offsets: torch.Tensor) -> BoundGaussians:
    """``bound`` with per-Gaussian deformation ``offsets (G, DEFORM_CHANNELS)`` applied (module docstring)."""
    quats = quaternion_multiply(axis_angle_to_quaternion(offsets[:, 3:6]), F.normalize(bound.quats, dim=-1))
    return replace(bound, local_means=bound.local_means + offsets[:, :3], quats=quats)


def deformation_offsets(net: DeformationUNet, uvs: torch.Tensor, frames: torch.Tensor, num_frames: int):
    """U-Net maps ``(F, C, S, S)`` for fitted ``frames (F,)`` and each Gaussian's offsets ``(F, G, C)`` at ``uvs (G, 2)``."""
    maps = net(frames, num_frames)
    return maps, sample_uv(maps, uvs)


@dataclass
class Avatar:
    gaussians: BoundGaussians
    head: HeadModel
    num_frames: int = 0          # frames of the fitted sequence (0: unknown)
    deformation: DeformationUNet | None = None  # per-frame UV deformation of the fitted sequence
    fitted_params: HeadParams | None = None      # the fitted sequence's parameters (F frames)

    def animate(self, params: HeadParams) -> HeadParams:
        """``params`` (any animation) with the fitted person's identity shape, when the avatar knows it."""
        return params if self.fitted_params is None else params.replace(shape=self.fitted_params.shape)

    def vertices(self, params: HeadParams) -> torch.Tensor:
        """Posed mesh vertices (F, N, 3) of ``params`` (F frames)."""
        return self.head(params)

    def world(self, vertices: torch.Tensor, frame: int | None = None) -> WorldGaussians:
        """World-space Gaussians on one posed mesh ``vertices`` (N, 3), with the deformation of fitted
        frame ``frame`` when the avatar has one (``frame=None``: the mesh alone, for new animations)."""
        bound = self.gaussians
        if frame is not None and self.deformation is not None:
            if not 0 <= frame < self.num_frames:
                raise Morph4DError(f"frame {frame} is outside the fitted sequence (0..{self.num_frames - 1}); "
                                   "use frame=None for animations the avatar was not fitted on")
            uvs = gaussian_uvs(self.head, bound)
            _, offsets = deformation_offsets(self.deformation, uvs, torch.tensor([frame]), self.num_frames)
            bound = deform_gaussians(bound, offsets[0])
        return bound.to_world(vertices, self.head.faces)


def save_avatar(folder: str | Path, gaussians: BoundGaussians, head_model: str, num_frames: int,
                deformation: DeformationUNet | None = None, fitted_params: HeadParams | None = None,
                extra: dict[str, str] | None = None) -> Path:
    """Write ``folder/avatar.safetensors`` atomically (layout: module docstring); returns its path."""
    from safetensors.torch import save_file
    tensors = {k: t.detach().contiguous() for k, t in gaussians.state_dict().items()}
    meta = {"format_version": AVATAR_VERSION, "head_model": head_model, "num_frames": str(num_frames),
            **(extra or {})}
    if deformation is not None:
        tensors.update({DEFORM_PREFIX + k: t.detach().contiguous() for k, t in deformation.state_dict().items()})
        meta["deform_config"] = json.dumps(asdict(deformation.config))
    if fitted_params is not None:
        tensors.update({FITTED_PREFIX + f.name: getattr(fitted_params, f.name).detach().float().contiguous()
                        for f in fields(HeadParams)})
    path = Path(folder) / AVATAR_FILE
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_avatar(folder: str | Path, flame_path: str | None = None) -> Avatar:
    """Read ``folder/avatar.safetensors``: a ``Morph4DError`` naming the file for another format version, a
    corrupt or foreign file, non-finite Gaussians or Gaussians bound to triangles the head model lacks."""
    path = Path(folder) / AVATAR_FILE
    if not path.is_file():
        raise InputNotFoundError(f"no fitted avatar at {path}; run `morph4d fit` first")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise Morph4DError(f"{path} is not a readable avatar file ({e}); run `morph4d fit` again") from None
    version = meta.get("format_version", "1")
    if version != AVATAR_VERSION:
        raise Morph4DError(f"{path} is avatar format version {version}; this morph4d reads "
                           f"version {AVATAR_VERSION} (refit with this version)")
    head = load_head_model(meta.get("head_model", "builtin"), flame_path=flame_path)
    try:
        tensors = load_file(str(path))
        bound = BoundGaussians.from_state_dict(tensors)
        net = None
        if "deform_config" in meta:
            net = DeformationUNet(DeformationUNetConfig(**json.loads(meta["deform_config"])),
                                  generator=torch.Generator().manual_seed(0))
            net.load_state_dict({k[len(DEFORM_PREFIX):]: v for k, v in tensors.items()
                                 if k.startswith(DEFORM_PREFIX)})
            net.eval()
        fitted = None
        if FITTED_PREFIX + "shape" in tensors:
            fitted = HeadParams(**{f.name: tensors[FITTED_PREFIX + f.name] for f in fields(HeadParams)})
        num_frames = int(meta.get("num_frames", 0))
    except (SafetensorError, OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise Morph4DError(f"{path} is not a readable avatar file ({type(e).__name__}: {e}); run `morph4d fit` "
                           f"again") from None
    for f in fields(BoundGaussians):
        check_finite(getattr(bound, f.name), f.name, str(path))
    if len(bound.binding) and (int(bound.binding.min()) < 0 or int(bound.binding.max()) >= len(head.faces)):
        raise Morph4DError(f"{path}: Gaussians are bound to triangles outside the '{head.name}' head model's "
                           f"{len(head.faces)} (was it fitted with another head model file?)")
    return Avatar(bound, head, num_frames, net, fitted)


FITTED = "fitted"   # the animation name that replays the fitted sequence (with its per-frame deformation)


def animation_params(avatar: Avatar, animation: str, frames: int = 49, fps: float = 25.0
                     ) -> tuple[HeadParams, bool, float]:
    """Per-frame parameters of ``animation`` for the avatar (built-in name, .npz, or ``FITTED``), with the
    fitted person's shape (``Avatar.animate``); whether they are the fitted sequence's frames; the fps.
    ValueError for an animation of another head model or ``FITTED`` on an avatar without its sequence."""
    if animation == FITTED:
        if avatar.fitted_params is None:
            raise Morph4DError(f"--animation {FITTED}: this avatar does not store its fitted sequence's parameters; "
                               "use a built-in animation or an animation .npz")
        return avatar.fitted_params, True, fps
    anim = get_animation(animation, avatar.head, frames, fps)
    anim.check_model(avatar.head)
    return avatar.animate(anim.params), False, anim.fps


__all__ = ["Avatar", "load_avatar", "animation_params", "FITTED", "save_avatar", "deform_gaussians", "deformation_offsets",
           "axis_angle_to_quaternion", "AVATAR_FILE", "AVATAR_VERSION", "DEFORM_CHANNELS"]
