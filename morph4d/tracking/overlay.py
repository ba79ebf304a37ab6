"""Pictures to judge a track by eye: the fitted mesh blended over the input, the detected landmarks (green)
and the fitted model's landmarks (red), for a photo (PNG panel) or every frame of a video (MP4)."""

from __future__ import annotations

import numpy as np
import torch

from morph4d.cameras import Cameras
from morph4d.heads import HeadModel, HeadParams
from morph4d.mesh.shade import preview_colors, shade_mesh
from morph4d.tracking.embedding import LandmarkEmbedding

GREEN = np.array([0.1, 0.9, 0.2], np.float32)
RED = np.array([1.0, 0.15, 0.1], np.float32)


def _dots(image: np.ndarray, pts: np.ndarray, color: np.ndarray, radius: int = 1) -> None:
    H, W = image.shape[:2]
    for x, y in pts:
        c, r = int(x), int(y)
        image[max(r - radius, 0):min(r + radius + 1, H), max(c - radius, 0):min(c + radius + 1, W)] = color


def draw_overlay(image: np.ndarray, model: HeadModel, params: HeadParams, camera: Cameras,
                 detected: np.ndarray | None, emb: LandmarkEmbedding, alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3) with the mesh of ``params`` (one frame) seen by ``camera`` blended in, detected
    landmarks (N, 2) in green and the model's embedded landmarks in red."""
    verts = model(params).reshape(-1, model.num_vertices, 3)[:1]
    shaded, mask = shade_mesh(verts, model.faces, preview_colors(model), camera)
    m = mask[0].numpy()[..., None] * alpha
    out = image * (1 - m) + shaded[0].numpy() * m
    if detected is not None:
        _dots(out, detected, GREEN)
    with torch.no_grad():
        lm = camera.project(emb.points(verts[0], model)[None])[0, :, :2].numpy()
    _dots(out, lm, RED)
    return np.clip(out, 0, 1).astype(np.float32)
