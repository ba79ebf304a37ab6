"""Shaded mesh rendering for previews and the demo: rasterize, interpolate normals and colours, light.

Lighting is Blinn-Phong with a key light, a fill light and ambient, evaluated in camera space so the
look does not depend on the orbit position. Images are float in [0, 1], ``(B, H, W, 3)``, white background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from morph4d.heads import HeadModel
from morph4d.heads.builtin import vertex_colors
from morph4d.mesh.raster import interpolate, rasterize

PREVIEW_SKIN, PREVIEW_EYES = (0.86, 0.66, 0.55), (0.93, 0.92, 0.90)  # albedo of head models without a palette


def preview_colors(model: HeadModel) -> torch.Tensor:
    """Per-vertex preview albedo ``(N, 3)``: the built-in head's painted groups, or skin with light eyes for
    other head models (FLAME)."""
    if model.name == "builtin":
        return vertex_colors(model)
    colors = torch.tensor(PREVIEW_SKIN).repeat(model.num_vertices, 1)
    if "eyes" in model.vertex_groups:
        colors[model.vertex_groups["eyes"]] = torch.tensor(PREVIEW_EYES)
    return colors


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(..., N, 3)`` of a triangle mesh (counter-clockwise = outward)."""
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (..., T, 3), length = 2 * area
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(-2, faces[:, k], face_n)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


@dataclass(frozen=True)
class Lighting:
    """Directions are in camera space (x right, y down, z forward); the key light is up-left of the camera."""
    key_dir: tuple = (0.45, 0.55, 0.70)     # direction the light travels: from the upper left
    fill_dir: tuple = (-0.6, -0.1, 0.8)
    key: float = 0.75
    fill: float = 0.25
    ambient: float = 0.22
    specular: float = 0.12
    shininess: float = 24.0


def shade_mesh(vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, cameras,
               lighting: Lighting = Lighting(), background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``vertices`` (B, N, 3) or (N, 3) with per-vertex ``colors`` (N, 3) in [0, 1].

    Returns ``(image (B, H, W, 3), alpha (B, H, W))``. Back-facing surfaces seen through openings (the
    inside of the mouth) are lit with their normal flipped towards the camera.
    """
    B = cameras.R.shape[0]
    if vertices.dim() == 2:
        vertices = vertices.expand(B, -1, -1)
    raster = rasterize(vertices, faces, cameras)
    normals_cam = vertex_normals(vertices, faces) @ cameras.R.transpose(1, 2)  # (B, N, 3) camera space
    points_cam = vertices @ cameras.R.transpose(1, 2) + cameras.t[:, None]
    n = torch.nn.functional.normalize(interpolate(normals_cam, faces, raster), dim=-1, eps=1e-12)
    p = interpolate(points_cam, faces, raster)
    albedo = interpolate(colors.expand(B, -1, -1), faces, raster)
    view = torch.nn.functional.normalize(-p, dim=-1, eps=1e-12)  # towards the camera
    n = torch.where((n * view).sum(-1, keepdim=True) < 0, -n, n)
    light = torch.full_like(albedo[..., :1], lighting.ambient)
    spec = torch.zeros_like(light)
    for direction, strength in ((lighting.key_dir, lighting.key), (lighting.fill_dir, lighting.fill)):
        l = -torch.nn.functional.normalize(torch.tensor(direction, dtype=n.dtype), dim=0)  # towards the light
        light = light + strength * (n @ l).clamp(min=0)[..., None]
        half = torch.nn.functional.normalize(l + view, dim=-1, eps=1e-12)
        spec = spec + strength * (n * half).sum(-1, keepdim=True).clamp(min=0) ** lighting.shininess
    rgb = (albedo * light + lighting.specular * spec).clamp(0, 1)
    mask = raster.mask[..., None]
    image = torch.where(mask, rgb, torch.full_like(rgb, background))
    return image, raster.mask.float()
