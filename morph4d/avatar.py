"""A fitted 4D avatar as one object: bound Gaussians + the head model that drives them (MVP4D §4).

Written by ``morph4d fit`` into its folder (``avatar.safetensors``; its metadata names the head model and
the format version). Everything downstream of fitting (render, re-animation, export, viewer) reads it
through ``load_avatar`` and places the Gaussians with ``Avatar.world``, the one place where the mesh and
(when fitted) the per-frame deformation are applied.

Re-animation: ``frame`` is an index into the FITTED sequence; ``frame=None`` (any animation the avatar was
not fitted on) places the Gaussians from the mesh alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from morph4d.gaussians import BoundGaussians, WorldGaussians
from morph4d.heads import HeadModel, HeadParams, load_head_model

AVATAR_FILE = "avatar.safetensors"
AVATAR_VERSION = "1"


@dataclass
class Avatar:
    gaussians: BoundGaussians
    head: HeadModel
    num_frames: int = 0          # frames of the fitted sequence (0: unknown)

    def vertices(self, params: HeadParams) -> torch.Tensor:
        """Posed mesh vertices (F, N, 3) of ``params`` (F frames)."""
        return self.head(params)

    def world(self, vertices: torch.Tensor, frame: int | None = None) -> WorldGaussians:
        """World-space Gaussians on one posed mesh ``vertices`` (N, 3)."""
        return self.gaussians.to_world(vertices, self.head.faces)


def load_avatar(folder: str | Path, flame_path: str | None = None) -> Avatar:
    """Read ``folder/avatar.safetensors``; ValueError for a file of another format version."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(folder) / AVATAR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fitted avatar at {path}; run `morph4d fit` first")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format_version", AVATAR_VERSION) != AVATAR_VERSION:
        raise ValueError(f"{path} is avatar format version {meta.get('format_version')}; this morph4d reads "
                         f"version {AVATAR_VERSION} (refit with this version)")
    head = load_head_model(meta.get("head_model", "builtin"), flame_path=flame_path)
    bound = BoundGaussians.from_state_dict(load_file(str(path)))
    return Avatar(bound, head, int(meta.get("num_frames", 0)))


__all__ = ["Avatar", "load_avatar", "AVATAR_FILE", "AVATAR_VERSION"]
