"""The baselines of ``morph4d eval``'s tables (issue 19 §3), for any ground-truth sequence.

* **Reference projection**: the reference image's pixels projected onto the ground truth's geometry at frame 0
  and carried with it to every view and frame (a texture copied onto the true, moving surface); surface points
  the reference camera does not see get the mean colour of those it sees; the background is white. On held-out
  synthetic identities the geometry is the whole scene (head and hair/glasses meshes, ``synthetic``); on a
  dataset sequence it is the head model of the sequence's parameters (no hair: hair outside the head mesh is
  background, which the masked metrics count as an error).
* **Oracle avatar**: the Gaussian avatar fitted to the ground-truth videos themselves (``FIT_PRESETS["demo"]``
  on the chosen training views): what a capture rig would give, the upper reference of the avatar rows.
  Views left out of its training are novel views for it.
Both are runs like any other: ``eval.run.evaluate`` scores them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.mesh.raster import interpolate, rasterize


def project_reference(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                      cameras: Cameras, supersample: int = 2) -> torch.Tensor:
    """Reference projection of ``ref_image`` (3, h, w) seen by ``ref`` (one camera) onto the mesh ``verts``
    (F, N, 3) / ``faces``, rendered at ``cameras``: (V, F, 3, H, W), at ``supersample`` x and area-averaged."""
    frames = verts.shape[0]
    s, H, W = supersample, cameras.height, cameras.width
    # depth of what the reference camera sees at frame 0
    big_ref = ref.resized(ref.width * s, ref.height * s)
    r0 = rasterize(verts[0], faces, big_ref)
    cam_pts0 = verts[0] @ ref.R[0].T + ref.t[0]                             # (N, 3) reference camera frame
    ref_depth = interpolate(cam_pts0[:, 2:], faces, r0)[0, ..., 0]         # (sH, sW)
    ref_depth = torch.where(r0.mask[0], ref_depth, torch.full_like(ref_depth, float("inf")))
    big = cameras.resized(W * s, H * s)
    out = torch.empty(len(cameras), frames, 3, H, W)
    visible_colors = []
    results = []
    with torch.no_grad():
        for f in range(frames):
            r = rasterize(verts[f], faces, big)                             # (V, sH, sW)
            p0 = interpolate(cam_pts0, faces, r)                            # (V, sH, sW, 3): the point at frame 0
            uv = ref.K[0] @ p0.reshape(-1, 3).T                             # project into the reference camera
            u, v, z = uv[0] / uv[2].clamp(min=1e-6), uv[1] / uv[2].clamp(min=1e-6), p0.reshape(-1, 3)[:, 2]
            grid = torch.stack([2 * u / ref.width - 1, 2 * v / ref.height - 1], -1).view(1, 1, -1, 2)
            color = F.grid_sample(ref_image[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T
            dref = F.grid_sample(ref_depth[None, None].nan_to_num(posinf=1e6), grid, mode="nearest",
                                 align_corners=False)[0, 0, 0]
            seen = (z <= dref + 0.01) & (grid.view(-1, 2).abs() <= 1).all(-1) & r.mask.reshape(-1)
            visible_colors.append(color[seen])
            results.append((r.mask.reshape(-1), seen, color))
        fill = torch.cat(visible_colors).mean(0) if sum(len(c) for c in visible_colors) else torch.full((3,), 0.5)
        for f, (mask, seen, color) in enumerate(results):
            rgb = torch.where(seen[:, None], color, fill.expand_as(color))
            rgb = torch.where(mask[:, None], rgb, torch.ones_like(rgb))     # white background
            img = rgb.view(len(cameras), H * s, W * s, 3).permute(0, 3, 1, 2)
            out[:, f] = F.avg_pool2d(img, s) if s > 1 else img
    return out


def truth_projection(truth) -> torch.Tensor:
    """The reference projection of a ground-truth sequence (``eval.inputs.Truth``): frame 0 of its view nearest
    the reference direction (``--reference-view`` names it) on the head model of its parameters, at every view:
    (V, F, 3, H, W)."""
    i = truth.reference_index
    with torch.no_grad():
        verts = truth.model(truth.params)                                   # (F, N, 3) world
    return project_reference(verts, truth.model.faces, truth.cameras[[i]], truth.images[i, 0], truth.cameras)


def fit_avatar(data: Path, out: Path, iterations: int, train_views: tuple[int, ...] | None, log) -> Path:
    """The avatar fitted to the videos of sequence ``data`` -> ``out`` (the ground truth's: the oracle avatar; the
    generated views': our avatar); a fit found there (a resumed benchmark) is reused. ``train_views``: view
    indices (None: every view)."""
    from morph4d.avatar.fit import FIT_PRESETS, fit_sequence
    if (out / "avatar.safetensors").is_file():
        log(f"[eval]   {out.name}: fitted before, reused")
    else:
        fit_sequence(data, out, replace(FIT_PRESETS["demo"], iterations=iterations, train_views=train_views),
                     log=lambda *a: None)
        log(f"[eval]   fitted {out.name}")
    return out


__all__ = ["project_reference", "truth_projection", "fit_avatar"]
