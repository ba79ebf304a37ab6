"""DDIM sampling as a pure function over a denoiser, generation-mode masks, and guidance wrappers
(MVP4D §3.3, §4; STYLE habit 3: guidance builds a new denoiser, it is not a branch in the sampler).

A *denoiser* is any callable ``denoise(x_t, t) -> x0`` over latents ``(B, V, F, C, h, w)`` and integer
timesteps ``(B,)``, returning the estimate of the clean latents. ``model_denoiser`` makes one from an
MMVDM-like network and a ``Diffusion``; classifier-free guidance combines two denoisers. Guidance in x0
space equals guidance in eps or v space: at a fixed (x_t, t) each is an affine function of the others
with the same coefficients for the conditional and unconditional predictions.
"""

from __future__ import annotations

from typing import Callable

import torch

from morph4d.cameras import angular_distance
from morph4d.diffusion.schedule import Diffusion
from morph4d.errors import Morph4DError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# generation modes (MVP4D §3.3, Fig. 3): which latents are given
# ---------------------------------------------------------------------------------------------------

def mode_mask(mode: int, num_views: int, num_latent_frames: int, given_views: list[int] | None = None,
              given_frames: int = 3) -> torch.Tensor:
    """``(V, F_lat)`` bool, True where a latent is given.

    mode 1: nothing given (reference image only); mode 2: ``given_views`` (default the first half) are
    given for all frames; mode 3: the first ``given_frames`` latent frames of every view (temporal
    continuation from the last 9 video frames); mode 4: modes 2 and 3 together.
    """
    if mode not in (1, 2, 3, 4):
        raise Morph4DError(f"generation mode must be 1, 2, 3 or 4, got {mode}")
    mask = torch.zeros(num_views, num_latent_frames, dtype=torch.bool)
    if mode in (2, 4):
        views = list(range(num_views // 2)) if given_views is None else given_views
        if not views or len(views) >= num_views or max(views) >= num_views:
            raise Morph4DError(f"mode {mode} needs some but not all of the {num_views} views given, got {views}")
        mask[views] = True
    if mode in (3, 4):
        if not 0 < given_frames < num_latent_frames:
            raise Morph4DError(f"mode {mode} needs 0 < given latent frames < {num_latent_frames}, got {given_frames}")
        mask[:, :given_frames] = True
    return mask


# ---------------------------------------------------------------------------------------------------
# the sampler
# ---------------------------------------------------------------------------------------------------

def ddim_sample(denoise: Denoiser, diffusion: Diffusion, noise: torch.Tensor, num_steps: int, *,
                given: torch.Tensor | None = None, given_mask: torch.Tensor | None = None, eta: float = 0.0,
                generator: torch.Generator | None = None, callback=None, anchor: torch.Tensor | None = None,
                anchor_weight: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) from pure noise ``(B, V, F, C, h, w)`` to clean latents.

    given, given_mask: clean latents ``(B, V, F, C, h, w)`` and ``(B, V, F)`` bool; given latents are
    the input at every step and are returned exactly as given (they enter the network clean, MVP4D §3.3).
    eta > 0 adds DDIM's stochasticity, drawn from ``generator``. ``callback(step, num_steps, x0)``.
    anchor, anchor_weight: latents ``(B, V, F, C, h, w)`` known up to a per-pixel weight in [0, 1]
    (broadcastable, e.g. ``(B, V, F, 1, h, w)``; ours, issue 17: the encoded reference projection and its
    confidence). After every step the sample is pulled towards the anchor noised to the step's level with the
    starting noise, ``x <- w (sqrt(a) anchor + sqrt(1 - a) noise) + (1 - w) x`` (inpainting with a soft known
    region, as RePaint without resampling): the network generates what the anchor does not know, consistent
    with what it does; at w = 1 the result is the anchor.
    """
    if noise.dim() != 6:
        raise ValueError(f"latents must be (B, V, F, C, h, w), got {tuple(noise.shape)}")
    keep = None
    if given is not None:
        if given_mask is None or given.shape != noise.shape or given_mask.shape != noise.shape[:3]:
            raise ValueError(f"given must be {tuple(noise.shape)} with given_mask {tuple(noise.shape[:3])}")
        keep = given_mask[..., None, None, None]
    ts = diffusion.timesteps(num_steps)
    B = noise.shape[0]
    ab = diffusion.alphas_cumprod
    x = noise if keep is None else torch.where(keep, given, noise)
    x0 = x
    for i, t in enumerate(ts):
        t_b = torch.full((B,), int(t), dtype=torch.long)
        x0 = denoise(x, t_b)
        a_t = ab[t].to(x.dtype)
        a_prev = ab[ts[i + 1]].to(x.dtype) if i + 1 < len(ts) else torch.tensor(1.0, dtype=x.dtype)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).clamp(min=1e-12).sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t).clamp(min=1e-12) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        if anchor is not None:
            known = a_prev.sqrt() * anchor + (1 - a_prev).clamp(min=0).sqrt() * noise
            x = anchor_weight * known + (1 - anchor_weight) * x
        if keep is not None:
            x = torch.where(keep, given, x)
        if callback is not None:
            callback(i, len(ts), x0)
    return x


# ---------------------------------------------------------------------------------------------------
# denoisers and guidance
# ---------------------------------------------------------------------------------------------------

def model_denoiser(model, diffusion: Diffusion, cond: torch.Tensor, ref_latent: torch.Tensor,
                   ref_cond: torch.Tensor) -> Denoiser:
    """Wrap a network ``model(latents, cond, ref_latent, ref_cond, timestep)`` as an x0 denoiser."""
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x, cond, ref_latent, ref_cond, t)
        return diffusion.split(out, x, t)[0]
    return denoise


def unconditional_inputs(cond: torch.Tensor, ref_latent: torch.Tensor, ref_cond: torch.Tensor):
    """Every conditioning signal and the reference dropped (zeros), as in training dropout (CAP4D/MVP4D)."""
    return torch.zeros_like(cond), torch.zeros_like(ref_latent), torch.zeros_like(ref_cond)


def _combine(c: torch.Tensor, u: torch.Tensor, scale) -> torch.Tensor:
    """u + scale * (c - u) with ``scale`` a float or per view ``(V,)`` / ``(B, V)``."""
    w = torch.as_tensor(scale, dtype=c.dtype)
    if w.dim() == 1:  # per view
        w = w.view(1, -1, 1, 1, 1, 1)
    elif w.dim() == 2:  # per batch item and view
        w = w.view(*w.shape, 1, 1, 1, 1)
    return u + w * (c - u)


def _unguided(scale) -> bool:
    """A plain scale of exactly 1: guidance returns the conditional prediction, no unconditional pass runs."""
    return isinstance(scale, (int, float)) and scale == 1.0


def guided(cond: Denoiser, uncond: Denoiser, scale: torch.Tensor | float) -> Denoiser:
    """Classifier-free guidance: uncond + scale * (cond - uncond). ``scale``: a float or per view
    ``(V,)`` / ``(B, V)``. Scale 1 returns the conditional prediction exactly (uncond is not evaluated)."""
    if _unguided(scale):
        return cond
    return lambda x, t: _combine(cond(x, t), uncond(x, t), scale)


def multiview_guided(cond: Denoiser, single: Denoiser, scale, needed: torch.Tensor) -> Denoiser:
    """MVP4D's multi-view CFG: the unconditional prediction of each view alone (``single`` on
    ``(n, 1, F, C, h, w)``, one item per view), only for the views flagged in ``needed`` ``(B, V)`` -- the
    views given whole are returned clean by the sampler, so their guidance is never used and they skip
    the pass (their unconditional prediction is taken as the conditional one)."""
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = cond(x, t)
        B, V = x.shape[:2]
        flat_x, flat_c, run = x.reshape(B * V, 1, *x.shape[2:]), c.reshape(B * V, 1, *x.shape[2:]), needed.reshape(-1)
        u = flat_c.clone()
        if bool(run.any()):
            u[run] = single(flat_x[run], t.repeat_interleave(V)[run])
        return _combine(c, u.reshape(x.shape), scale)
    return denoise


def angular_guidance_scales(view_az, view_el, ref_az, ref_el, at_0: float = 1.1, at_180: float = 1.6) -> torch.Tensor:
    """Per-view guidance scale growing linearly with the angle to the nearest reference view: 1.1 at 0
    degrees to 1.6 at 180 degrees (MVP4D §4). Views: ``(V,)`` degrees; references: ``(R,)`` degrees."""
    view_az, view_el = torch.as_tensor(view_az, dtype=torch.float64), torch.as_tensor(view_el, dtype=torch.float64)
    ref_az, ref_el = torch.as_tensor(ref_az, dtype=torch.float64), torch.as_tensor(ref_el, dtype=torch.float64)
    d = angular_distance(view_az[:, None], view_el[:, None], ref_az[None], ref_el[None]).min(dim=1).values
    return (at_0 + (at_180 - at_0) * d / 180.0).float()


GUIDANCE_KINDS = ("multiview", "cfg", "none")  # MVP4D Table 7: multi-view CFG, conventional CFG, none


def guidance(kind: str, model, diffusion: Diffusion, cond, ref_latent, ref_cond, scale,
             given_mask: torch.Tensor | None = None) -> Denoiser:
    """The three options of MVP4D's Table 7: ``"none"``, ``"cfg"`` (one joint unconditional pass) and
    ``"multiview"`` (a separate unconditional pass per generated view). ``given_mask`` ``(B, V, F_lat)``: the
    latents the sampler keeps clean; views given whole skip their multi-view unconditional pass."""
    c = model_denoiser(model, diffusion, cond, ref_latent, ref_cond)
    if kind == "none":
        return c
    u_cond, u_ref, u_ref_cond = unconditional_inputs(cond, ref_latent, ref_cond)
    if kind == "cfg":
        if _unguided(scale):
            return c
        # one forward of 2B items instead of two of B: the conditional and unconditional inputs have the same
        # shape, so they batch (the multi-view kind cannot: its conditional pass attends across the V views
        # jointly, its unconditional one over each view alone; those run as two forwards per step, the second
        # batching the views as items, never one forward per view)
        both = model_denoiser(model, diffusion, torch.cat([cond, u_cond]), torch.cat([ref_latent, u_ref]),
                              torch.cat([ref_cond, u_ref_cond]))
        return lambda x, t: _combine(*both(torch.cat([x, x]), torch.cat([t, t])).chunk(2), scale)
    if kind == "multiview":
        B, V = cond.shape[:2]
        needed = torch.ones(B, V, dtype=torch.bool) if given_mask is None else ~given_mask.all(dim=2)
        run = needed.reshape(-1)
        single = model_denoiser(model, diffusion, u_cond.reshape(B * V, 1, *cond.shape[2:])[run],
                                u_ref.repeat_interleave(V, 0)[run], u_ref_cond.repeat_interleave(V, 0)[run])
        if _unguided(scale):
            return c
        return multiview_guided(c, single, scale, needed)
    raise Morph4DError(f"guidance must be 'none', 'cfg' or 'multiview', got {kind!r}")
