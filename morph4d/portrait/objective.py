"""IM-Portrait's training objective (IM-Portrait §3.3, Eqs. 6-7; supplement "Training Details"; REFERENCE.md §2):
the network's MPIs rendered and compared with the target frames.

* **L_mpi** (Eq. 6, chosen with probability 0.8): the MPI is built in the *target* camera and rendered into it.
* **L_side** (Eq. 7, probability 0.2): the MPI is built in the *reference* camera and rendered into the target
  camera as a side view. The supplement draws one of the two per iteration (``choose_loss``).
* Terms and weights (supplement): the image term, LPIPS 0.1 (when a user's LPIPS network is given: none ships
  offline, ``eval.learned``), the mask term 0.01 (L2 between the rendered opacity and the soft matte), depth
  smoothness 0.01 (a Laplacian kernel on the rendered disparity), disparity 0.001. Ours, where the supplement
  is silent: the image term is the mean squared error over the frame composited over white (our frames'
  background); the smoothness term is the mean absolute 3x3 Laplacian of the rendered disparity, normalised by
  the planes' disparity range; the disparity term is the L1 distance to a target disparity where one is given
  (ours: the head model's rasterized disparity inside the matte, the 3DMM as depth prior; exact depth of the
  synthetic data can stand in), normalised the same way.
* **Stages** (supplement): bootstrap = the colour branch alone with L_mpi; then the colour branch is frozen but
  for its output layer, and the geometry branch, that output layer and the zero-convolution links train with
  both losses (``trainable``).
* **Condition dropout** (supplement): the first-frame slot is emptied with probability 0.7, the reference
  portrait with 0.1 (``drop_conditions``); emptied = zeros (image) and a zero flag, what the sampler feeds
  for the unconditional terms of its two guidance scales. The reference projection channels (ours,
  ``models.portrait_unet``) are the reference's: emptied with it.
* **Frame conditions** (``frame_conditions``): what every frame carries besides the noisy image and the
  first-frame slot, built the same way by training, sampling and evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from morph4d.cameras import Cameras
from morph4d.conditioning.projection import project_with_confidence
from morph4d.errors import Morph4DError
from morph4d.models.portrait_unet import FRAME_CHANNELS
from morph4d.portrait.mpi import MPI, plane_colors, render_mpi

WEIGHTS = {"image": 1.0, "lpips": 0.1, "mask": 0.01, "smooth": 0.01, "disparity": 0.001}
P_MPI = 0.8                        # probability of L_mpi (else L_side) per iteration
DROP_FIRST_FRAME, DROP_REFERENCE = 0.7, 0.1
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def choose_loss(g: torch.Generator) -> str:
    """"mpi" with probability ``P_MPI``, else "side" (one per iteration, supplement)."""
    return "mpi" if float(torch.rand((), generator=g)) < P_MPI else "side"


def drop_conditions(frames: torch.Tensor, reference: torch.Tensor, g: torch.Generator,
                    p_first: float = DROP_FIRST_FRAME, p_reference: float = DROP_REFERENCE):
    """Per batch item, empty the first-frame slot (channels 3-6 of ``frames`` (B, F, C, H, W): image and flag)
    and / or the reference (B, 6, H, W) with its projection channels (10-13 where the network has them). Returns
    new tensors and the (B,) masks of what was dropped."""
    B = frames.shape[0]
    drop_first = torch.rand(B, generator=g) < p_first
    drop_ref = torch.rand(B, generator=g) < p_reference
    frames = frames.clone()
    frames[drop_first, :, 3:7] = 0
    frames[drop_ref, :, FRAME_CHANNELS:] = 0
    reference = torch.where(drop_ref[:, None, None, None], torch.zeros_like(reference), reference)
    return frames, reference, drop_first, drop_ref


def trainable(net, stage: str) -> list[torch.nn.Parameter]:
    """The parameters a stage trains: "bootstrap" = the colour branch (with its stem, reference encoder, time
    embedding and output head); "geometry" = the geometry branch and head, the links and the colour head's last
    layer (supplement)."""
    if stage == "bootstrap":
        modules = [net.time_proj, net.time_embed, net.ref_stem, net.ref_blocks, net.color, net.color_head]
    elif stage == "geometry":
        modules = [net.geometry, net.geometry_head, net.links, net.color_head.out]
    else:
        raise Morph4DError(f"unknown IM-Portrait training stage {stage!r}; expected 'bootstrap' or 'geometry'")
    return [p for m in modules for p in m.parameters()]


def frame_conditions(uv, verts: torch.Tensor, camera: Cameras, ref_verts: torch.Tensor, ref_camera: Cameras,
                     ref_image: torch.Tensor, projection: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-frame conditions in ``camera`` (one, the MPI camera): the UV maps of the posed head ``verts``
    (F, N, 3; ``uv`` a ``conditioning.uvmaps.UVConditioner``) and, with ``projection``, the reference ``ref_image`` (3, H, W in [0, 1],
    seen by ``ref_camera`` on the mesh ``ref_verts`` (N, 3)) projected onto ``verts`` (F, N, 3) with its confidence.
    Returns ((F, 3 [+ 4], H, W): UV in [-1, 1], projection in [-1, 1], confidence in [0, 1]; the projection in
    [0, 1] (F, 3, H, W) or None)."""
    with torch.no_grad():
        maps = uv.maps_of(verts, camera)                                             # (F, 3, H, W)
        if not projection:
            return maps, None
        both = torch.cat([ref_verts[None], verts])
        video, conf = project_with_confidence(both, uv.model.faces, ref_camera, ref_image, camera)
        video, conf = video[0, 1:], conf[0, 1:]
    return torch.cat([maps, video * 2 - 1, conf], 1), video


def frame_mpi(out: dict, b: int, f: int, depths: torch.Tensor, camera: Cameras) -> MPI:
    """The MPI of item ``b``, frame ``f`` of the network's output, in ``camera``."""
    alpha = out["alpha"][b, f]
    return MPI(plane_colors(out["front"][b, f], out["residual"][b, f], alpha), alpha, depths, camera)


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), LAPLACIAN.to(x)[None, None])


def render_losses(out: dict, target: torch.Tensor, matte: torch.Tensor, depths: torch.Tensor,
                  mpi_cameras: list[Cameras], target_cameras: list[Cameras],
                  target_disparity: torch.Tensor | None = None, lpips=None) -> dict:
    """The weighted terms (module doc) of the network's output ``out`` (front / residual (B, F, 3, H, W), alpha
    (B, F, P, 1, H, W)) against ``target`` (B, F, 3, H, W) over white and its ``matte`` (B, F, 1, H, W).
    ``depths`` (B, P); ``mpi_cameras[b]`` / ``target_cameras[b]``: F cameras each, where item b's MPIs are built
    / rendered (the same for L_mpi, the reference's repeated for L_side). Returns {term: weighted value,
    "total": sum}."""
    B, Fr = target.shape[:2]
    if out["alpha"].shape[:2] != (B, Fr) or len(mpi_cameras) != B or len(target_cameras) != B:
        raise Morph4DError(f"render_losses: outputs {tuple(out['alpha'].shape[:2])}, targets {(B, Fr)} and "
                           f"{len(mpi_cameras)} / {len(target_cameras)} camera lists must agree")
    rgb, alpha, disp = [], [], []
    for b in range(B):
        for f in range(Fr):
            r = render_mpi(frame_mpi(out, b, f, depths[b], mpi_cameras[b][[f]]), target_cameras[b][[f]],
                           background=1.0, fast=False)
            rgb.append(r.rgb[0])
            alpha.append(r.alpha[0])
            disp.append(r.disparity[0])
    rgb = torch.stack(rgb).unflatten(0, (B, Fr))
    alpha = torch.stack(alpha).unflatten(0, (B, Fr))
    disp = torch.stack(disp).unflatten(0, (B, Fr))
    span = (1 / depths[:, 0] - 1 / depths[:, -1]).to(disp)[:, None, None, None, None]   # disparity range per item
    terms = {"image": WEIGHTS["image"] * F.mse_loss(rgb, target),
             "mask": WEIGHTS["mask"] * F.mse_loss(alpha, matte),
             "smooth": WEIGHTS["smooth"] * (_laplacian((disp / span).flatten(0, 1)).abs().mean())}
    if target_disparity is not None:
        known = (target_disparity > 0) & (matte > 0.5)
        diff = ((disp - target_disparity) / span).abs()
        terms["disparity"] = WEIGHTS["disparity"] * (diff[known].mean() if known.any() else diff.sum() * 0)
    if lpips is not None:
        terms["lpips"] = WEIGHTS["lpips"] * lpips(rgb.flatten(0, 1), target.flatten(0, 1)).mean()
    terms["total"] = sum(terms.values())
    return terms


__all__ = ["WEIGHTS", "P_MPI", "DROP_FIRST_FRAME", "DROP_REFERENCE", "choose_loss", "drop_conditions",
           "frame_conditions", "trainable", "frame_mpi", "render_losses"]
