"""The reference portrait projected through a head mesh into other cameras and frames: the reference
projection (a texture copied from one photo onto a moving surface).

Used by the evaluation's reference-projection baseline (``eval.baselines``, ``eval.synthetic``) and by
IM-Portrait's training, where it is the pseudo ground truth of L_side (``portrait.train``): the reference view
with the target expression, blurry where the mesh is coarse, which the paper only uses at large noise levels.
Surface points the reference camera does not see (a depth test against the reference's own render) get the mean
colour of those it sees; the background is white.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError
from morph4d.mesh.raster import interpolate, rasterize
from morph4d.mesh.shade import vertex_normals
from morph4d.models.latent import LATENT_FACTOR, check_frame_count, kept_frames


def project_reference(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                      cameras: Cameras, supersample: int = 2) -> torch.Tensor:
    """Reference projection of ``ref_image`` (3, h, w) seen by ``ref`` (one camera) onto the mesh ``verts``
    (F, N, 3) / ``faces``, rendered at ``cameras``: (V, F, 3, H, W), at ``supersample`` x and area-averaged."""
    return project_with_confidence(verts, faces, ref, ref_image, cameras, supersample)[0]


def project_with_confidence(verts: torch.Tensor, faces: torch.Tensor, ref: Cameras, ref_image: torch.Tensor,
                         cameras: Cameras, supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``project_reference``'s colours (V, F, 3, H, W) and their confidence (V, F, 1, H, W) in [0, 1]: per pixel,
    the cosine between the surface normal at frame 0 and the ray to the reference camera where the reference sees
    the point (grazing views of the reference give blurred texture), 0 where it does not or off the mesh."""
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
    conf = torch.empty(len(cameras), frames, 1, H, W)
    normals0 = vertex_normals(verts[0], faces) @ ref.R[0].T                  # (N, 3) in the reference camera frame
    facing0 = (normals0 * -torch.nn.functional.normalize(cam_pts0, dim=-1)).sum(-1, keepdim=True).clamp(min=0)
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
            cos = interpolate(facing0, faces, r).reshape(-1) * seen                # (V * sH * sW,)
            c = cos.view(len(cameras), 1, H * s, W * s)
            conf[:, f] = F.avg_pool2d(c, s) if s > 1 else c
        fill = torch.cat(visible_colors).mean(0) if sum(len(c) for c in visible_colors) else torch.full((3,), 0.5)
        for f, (mask, seen, color) in enumerate(results):
            rgb = torch.where(seen[:, None], color, fill.expand_as(color))
            rgb = torch.where(mask[:, None], rgb, torch.ones_like(rgb))     # white background
            img = rgb.view(len(cameras), H * s, W * s, 3).permute(0, 3, 1, 2)
            out[:, f] = F.avg_pool2d(img, s) if s > 1 else img
    return out, conf


def projection_conditioning(ref_verts: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, ref: Cameras,
                            ref_image: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """MVP4D's ``projection`` conditioning group (ours, issue 17; ``conditioning.maps``) before encoding: the
    reference ``ref_image`` (3, h, w), seen by ``ref`` on the mesh ``ref_verts`` (N, 3), projected onto the frames
    ``verts`` (F = 1 + 4k, N, 3) in ``cameras`` (V). Returns the projection video (V, F, 3, H, W) in [0, 1], for
    the video autoencoder, and its confidence at the kept frames and latent resolution (V, F_lat, 1, H/8, W/8)."""
    check_frame_count(verts.shape[0])
    if cameras.height % LATENT_FACTOR or cameras.width % LATENT_FACTOR:
        raise Morph4DError(f"image size must be divisible by {LATENT_FACTOR}, got {cameras.width}x{cameras.height}")
    video, conf = project_with_confidence(torch.cat([ref_verts[None], verts]), faces, ref, ref_image, cameras)
    conf = conf[:, 1:][:, kept_frames(verts.shape[0])]                       # (V, F_lat, 1, H, W)
    return video[:, 1:], F.avg_pool2d(conf.flatten(0, 1), LATENT_FACTOR).unflatten(0, conf.shape[:2])


__all__ = ["project_reference", "project_with_confidence", "projection_conditioning"]
