"""Sampling IM-Portrait's MPI videos (IM-Portrait §3.4, supplement "Long Video CFG"; REFERENCE.md §2).

One clip: DDIM over the frontal video in pixel space (``diffusion.schedule``), the network predicting each frame's
MPI; its frontal render is the x0 estimate the next step needs. **Two guidance scales** (Brooks et al.'s
InstructPix2Pix form, as the supplement says): with u = no first frame and no reference, f = the first frame
only, fr = both,

    out = u + s_first (f - u) + s_ref (fr - f),

applied to the network's outputs (frontal and residual images, plane alphas; clamped to [0, 1] so that every
step's MPI stays valid: ours). ``s_ref`` = 1.5; ``s_first`` falls linearly from 1.0 to 0.0 over the first half of
the clip's frames and stays 0.0 for the rest (``first_frame_scales``; the supplement's 32-frame clips: 16 + 16).
Without a first frame (a clip that starts a video) the f term is dropped: out = u + s_ref (r - u), r = the
reference only. Long videos chain clips, each starting from the previous clip's last frontal frame (the
supplement's "long video" rule; ``morph4d portrait`` will do the chaining).
"""

from __future__ import annotations

import torch

from morph4d.cameras import Cameras
from morph4d.diffusion.schedule import Diffusion
from morph4d.portrait.mpi import render_mpi
from morph4d.portrait.objective import frame_mpi

REFERENCE_SCALE = 1.5
CONDITION_CHANNELS = 7     # first-frame image, flag, UV map: the clip's conditions that are not the reference's


def first_frame_scales(frames: int, start: float = 1.0) -> torch.Tensor:
    """Per-frame first-frame guidance: ``start`` -> 0 linearly over the first half of the frames, then 0."""
    half = frames // 2
    s = torch.zeros(frames)
    if half > 0:
        s[:half] = torch.linspace(start, 0.0, half + 1)[:half]
    return s


def _combine(parts: list[dict], weights: list) -> dict:
    """Weighted sum of network outputs, per key; weights are scalars or per-frame (F,) tensors."""
    out = {}
    for k in parts[0]:
        acc = 0
        for p, w in zip(parts, weights):
            w = torch.as_tensor(w, dtype=p[k].dtype)
            w = w.view(1, -1, *([1] * (p[k].dim() - 2))) if w.dim() == 1 else w
            acc = acc + w * p[k]
        out[k] = acc.clamp(0, 1)
    return out


def sample_clip(net, diffusion: Diffusion, cond: torch.Tensor, reference: torch.Tensor, depths: torch.Tensor,
                camera: Cameras, steps: int, generator: torch.Generator, first_scales: torch.Tensor | None = None,
                reference_scale: float = REFERENCE_SCALE) -> dict:
    """One clip: ``cond`` (F, 7 [+ 4], H, W) = first-frame image (3, in [-1, 1]), its flag (1; all zero: no first
    frame), the UV maps (3) of every frame [and the reference projection with its confidence (4), emptied with
    the reference in the guidance's terms: ``objective.frame_conditions``]; ``reference`` (6, H, W); ``depths``
    (P,) and ``camera`` (1): the MPIs' frontal camera. Returns the network's outputs of the last step (batch dim dropped): front / residual
    (F, 3, H, W), alpha (F, P, 1, H, W)."""
    Fr, _, H, W = cond.shape
    has_first = bool(cond[:, 3].abs().sum() > 0)
    first_scales = first_frame_scales(Fr) if first_scales is None else first_scales
    no_first = cond.clone()
    no_first[:, :4] = 0
    no_ref = torch.zeros_like(reference)
    cond_no_ref, none = cond.clone(), no_first.clone()     # channels past the UV maps are the reference's (ours)
    cond_no_ref[:, CONDITION_CHANNELS:] = 0
    none[:, CONDITION_CHANNELS:] = 0
    x = torch.randn(1, Fr, 3, H, W, generator=generator)
    ts = diffusion.timesteps(steps)
    with torch.no_grad():
        for i, t in enumerate(ts):
            def run(c, r):
                return net(torch.cat([x[0], c], 1)[None], t.view(1), r[None])
            u = run(none, no_ref)
            if has_first:
                f, fr = run(cond_no_ref, no_ref), run(cond, reference)
                out = _combine([u, f, fr], [1 - first_scales, first_scales - reference_scale, reference_scale])
            else:
                r = run(no_first, reference)
                out = _combine([u, r], [1 - reference_scale, reference_scale])
            x0 = torch.stack([render_mpi(frame_mpi(out, 0, f, depths, camera), camera).rgb[0]
                              for f in range(Fr)])[None] * 2 - 1
            if i + 1 < len(ts):
                a, s = diffusion.coefficients(t.view(1), x)
                a2, s2 = diffusion.coefficients(ts[i + 1].view(1), x)
                x = a2 * x0 + s2 * (x - a * x0) / s
    return {k: v[0] for k, v in out.items()}


def sample_video(net, diffusion: Diffusion, maps: torch.Tensor, reference: torch.Tensor, depths: torch.Tensor,
                 camera: Cameras, clip: int, steps: int, seed: int, constant_first: float | None = None,
                 load=None, save=None) -> list[dict]:
    """A long video: ``maps`` (F, 3 [+ 4], H, W) (``objective.frame_conditions``) cut into clips of ``clip``
    frames, each sampled with the previous clip's last frontal frame in its first-frame slot (the first clip has
    none). ``constant_first``: a constant
    first-frame scale instead of the schedule (the supplement's Fig. A comparison). ``load(c)`` / ``save(c, out)``:
    a finished clip's outputs from / to storage (resuming). Returns the clips' outputs."""
    Fr, _, H, W = maps.shape
    outputs, first = [], None
    for c, start in enumerate(range(0, Fr, clip)):
        n = min(clip, Fr - start)
        out = load(c) if load is not None else None
        if out is None:
            cond = torch.cat([torch.zeros(n, 4, H, W), maps[start:start + n]], 1)
            if first is not None:
                cond[:, :3] = first * 2 - 1
                cond[:, 3] = 1
            scales = None if constant_first is None else torch.full((n,), float(constant_first))
            out = sample_clip(net, diffusion, cond, reference, depths, camera, steps,
                              torch.Generator().manual_seed(seed * 1000 + c), first_scales=scales)
            if save is not None:
                save(c, out)
        outputs.append(out)
        last = frame_mpi({k: v[None] for k, v in out.items()}, 0, n - 1, depths, camera)
        first = render_mpi(last, camera).rgb[0].clamp(0, 1)
    return outputs


__all__ = ["REFERENCE_SCALE", "CONDITION_CHANNELS", "first_frame_scales", "sample_clip", "sample_video"]
