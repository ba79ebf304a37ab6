"""IM-Portrait's conditioning maps: the head model's UV coordinates rasterized into the frontal camera, with the
eyes and the mouth coloured apart (IM-Portrait §3.1: "target expression and pose as rasterized 3DMM UV-coordinate
maps"; REFERENCE.md §2).

One 3-channel image per frame, at pixel resolution (IM-Portrait is a pixel-space model), values in [-1, 1]:

* channels 0, 1: the surface point's texture coordinates (u, v) in [0, 1], mapped to [-1, 1];
* channel 2: the region code, ours: -1 on the skin / hair-less head, 0 on the eyes (eyeballs, iris, pupil),
  +1 inside the mouth (cavity, teeth, tongue), so that gaze and mouth opening are visible to the network
  independently of the UV layout (the paper colours them apart without saying how);
* off the head every channel is -1 (u = v = 0 is a valid texture coordinate, and the region code alone would
  not tell background from skin, so the three together do: (-1, -1, -1) is no surface point of any UV layout
  in practice).

Regions come from the head model's ``vertex_groups`` ("eyes", "mouth_interior"; the built-in head has both).
FLAME has "eyes" only: it has no mouth-interior mesh, so its open mouth shows what lies behind the lips'
hole (the neck / background), and its region code there is that of the surface seen. The maps are rendered at
``supersample`` x and area-averaged (anti-aliased edges), as the MVP4D maps are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel, HeadParams
from morph4d.mesh.raster import interpolate, rasterize

EYES, MOUTH = 0.0, 1.0      # region codes (module doc); skin is -1
SUPERSAMPLE = 2


def region_codes(model: HeadModel) -> torch.Tensor:
    """Per-vertex region code (N, 1): -1 skin, 0 eyes, +1 mouth interior."""
    code = torch.full((model.num_vertices, 1), -1.0)
    groups = model.vertex_groups or {}
    if "eyes" in groups:
        code[torch.as_tensor(groups["eyes"], dtype=torch.long)] = EYES
    if "mouth_interior" in groups:
        code[torch.as_tensor(groups["mouth_interior"], dtype=torch.long)] = MOUTH
    return code


class UVConditioner:
    """Rasterizes ``uv_maps`` of one head model (its UV layout and regions are read once)."""

    def __init__(self, model: HeadModel, supersample: int = SUPERSAMPLE):
        if model.uvs is None or model.uv_faces is None:
            raise Morph4DError(f"head model '{model.name}' has no UV layout (uvs / uv_faces); IM-Portrait's "
                               f"conditioning maps need one (FLAME files carry 'vt' / 'ft')")
        self.model, self.supersample = model, supersample
        self.uvs = model.uvs.float() * 2 - 1                                # (M, 2) in [-1, 1]
        self.regions = region_codes(model)                                  # (N, 1)

    def maps(self, params: HeadParams, cameras: Cameras) -> torch.Tensor:
        """``params`` of F frames seen by ``cameras`` (F cameras, or 1 shared) -> (F, 3, H, W) in [-1, 1]."""
        with torch.no_grad():
            return self.maps_of(self.model(params), cameras)

    def maps_of(self, verts: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """``maps`` of posed vertices (F, N, 3) the caller already has."""
        if len(cameras) not in (1, verts.shape[0]):
            raise Morph4DError(f"{verts.shape[0]} frames need 1 or {verts.shape[0]} cameras, got {len(cameras)}")
        if len(cameras) == 1 and verts.shape[0] > 1:
            cameras = Cameras.cat([cameras] * verts.shape[0])
        s = self.supersample
        big = cameras.resized(cameras.width * s, cameras.height * s)
        r = rasterize(verts, self.model.faces, big)
        uv = interpolate(self.uvs, self.model.uv_faces, r)                  # (F, sH, sW, 2)
        region = interpolate(self.regions, self.model.faces, r)             # (F, sH, sW, 1)
        out = torch.cat([uv, region], -1)
        out = torch.where(r.mask[..., None], out, torch.full_like(out, -1.0)).permute(0, 3, 1, 2)
        return F.avg_pool2d(out, s) if s > 1 else out


__all__ = ["EYES", "MOUTH", "SUPERSAMPLE", "region_codes", "UVConditioner"]
