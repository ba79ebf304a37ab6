"""Adaptive density control of bound Gaussians (3DGS §5.2, as GaussianAvatars §3.3 adapts it to a mesh).

Every ``every`` steps inside ``[start, stop)``: Gaussians whose mean view-space (screen) gradient exceeds
``grad_threshold`` are densified: cloned when small (largest local scale ``exp(s)`` at most
``clone_max_scale`` triangle units), else split into two, drawn from the Gaussian itself, with scales
divided by 1.6 (3DGS's factor). Then Gaussians with opacity below ``min_opacity`` are pruned, except that
every triangle that had a Gaussian keeps at least one (its most opaque): GaussianAvatars' rule, so the
mesh never loses its covering. New Gaussians inherit their parent's triangle (binding).

The running state (gradient sums and counts) is an explicit ``DensifyState`` the loop owns and
checkpoints; ``densify_and_prune`` returns the new ``BoundGaussians`` and resizes the Adam state of every
parameter group consistently (moments of kept Gaussians move with them, new ones start at zero), so a
resumed fit continues exactly.

Units: the gradient is taken w.r.t. 2D means in pixels; 3DGS's threshold 2e-4 is in NDC units
(``ndc = 2 pixel / W - 1``), so the loop accumulates ``|dL/dmean2d| * W / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from morph4d.avatar.gaussians.binding import BoundGaussians
from morph4d.avatar.gaussians.rasterize import quaternion_to_matrix

SPLIT_SCALE = 1.6  # 3DGS: each of the two children has the parent's scales / 1.6


@dataclass(frozen=True)
class DensifyConfig:
    every: int = 100               # steps between densification rounds (3DGS: 100)
    start: int = 200               # first step that may densify (3DGS: 500 of 30k; scaled to short fits)
    stop: int = 10_000             # no densification from this step on (3DGS: 15k)
    grad_threshold: float = 2e-4   # mean view-space gradient (NDC units) that triggers densification (3DGS)
    clone_max_scale: float = 1.0   # local units of k: clone at or below, split above
    min_opacity: float = 0.005     # prune below (3DGS)
    max_gaussians: int = 200_000   # densification stops adding above this count (a CPU budget)


@dataclass
class DensifyState:
    """Per-Gaussian sums of view-space gradient norms (NDC units) and the number of views they were seen in."""
    grad_sum: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, n: int) -> "DensifyState":
        return cls(torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.int64))

    def add(self, index: torch.Tensor, grad2d: torch.Tensor, width: int) -> None:
        """Accumulate one view: ``index (M,)`` Gaussians that were visible, ``grad2d (M, 2)`` in pixels."""
        self.grad_sum.index_add_(0, index, grad2d.detach().norm(dim=-1).double() * (width / 2))
        self.count.index_add_(0, index, torch.ones_like(index))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"grad_sum": self.grad_sum, "count": self.count}


def keep_one_per_triangle(prune: torch.Tensor, binding: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """``prune (G,)`` bool with, for each triangle whose Gaussians would all go, its highest-``score``
    Gaussian spared."""
    survivors = torch.zeros(int(binding.max()) + 1 if len(binding) else 0, dtype=torch.bool)
    survivors[binding[~prune]] = True
    orphaned = prune & ~survivors[binding]
    if orphaned.any():
        idx = orphaned.nonzero()[:, 0]
        # the best Gaussian per orphaned triangle: sort by (triangle, -score), take the first of each run
        order = idx[torch.argsort(-score[idx], stable=True)]
        order = order[torch.argsort(binding[order], stable=True)]
        first = torch.ones(len(order), dtype=torch.bool)
        first[1:] = binding[order][1:] != binding[order][:-1]
        prune = prune.clone()
        prune[order[first]] = False
    return prune


def _resize_optimizer(opt: torch.optim.Optimizer, names: list[str], new: dict[str, torch.Tensor],
                      keep: torch.Tensor, parents: torch.Tensor) -> None:
    """Swap each named group's parameter for ``new[name]`` = old[keep] ++ children; Adam moments follow
    (``keep`` rows kept, zero rows appended for the ``len(parents)`` children)."""
    for group in opt.param_groups:
        name = group["name"]
        if name not in names:
            continue
        old = group["params"][0]
        state = opt.state.pop(old, None)
        group["params"][0] = new[name]
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                m = state[key]
                state[key] = torch.cat([m[keep], m.new_zeros((len(parents),) + m.shape[1:])])
            opt.state[new[name]] = state


def densify_and_prune(bound: BoundGaussians, state: DensifyState, cfg: DensifyConfig,
                      opt: torch.optim.Optimizer, *, generator: torch.Generator) -> tuple[BoundGaussians, DensifyState, dict]:
    """One round of clone / split / prune (module docstring). ``opt`` has one group per float tensor of
    ``bound`` (named like the ``BoundGaussians`` fields); returns the new Gaussians (leaf tensors that
    require grad, already in ``opt``), a zeroed state and counts."""
    G = len(bound)
    with torch.no_grad():
        avg = state.grad_sum / state.count.clamp(min=1)
        grow = (avg >= cfg.grad_threshold) & (state.count > 0)
        room = max(cfg.max_gaussians - G, 0)
        if int(grow.sum()) > room:  # keep the strongest gradients within the budget
            idx = grow.nonzero()[:, 0]
            grow = torch.zeros_like(grow)
            grow[idx[torch.argsort(-avg[idx], stable=True)[:room]]] = True
        big = bound.log_scales.exp().amax(-1) > cfg.clone_max_scale
        clone, split = grow & ~big, grow & big
        # Split: two children sampled from the parent (local frame), scales / 1.6; the parent is removed.
        sp = split.nonzero()[:, 0]
        clones = clone.nonzero()[:, 0]
        sigma = bound.log_scales[sp].exp().repeat(2, 1)  # (2S, 3) local units
        rot = quaternion_to_matrix(torch.nn.functional.normalize(bound.quats[sp], dim=-1)).repeat(2, 1, 1)
        noise = torch.randn(sigma.shape, generator=generator, dtype=sigma.dtype) * sigma
        split_means = bound.local_means[sp].repeat(2, 1) + (rot @ noise[:, :, None])[..., 0]
        parents = torch.cat([clones, sp.repeat(2)])
        children = {f: getattr(bound, f)[parents].clone() for f in
                    ("local_means", "log_scales", "quats", "opacity_logits", "sh", "binding")}
        children["local_means"][len(clones):] = split_means
        children["log_scales"][len(clones):] -= torch.log(torch.tensor(SPLIT_SCALE, dtype=sigma.dtype))
        # Prune the split parents and transparent Gaussians, while one per triangle survives (children
        # always stay, so a split parent's triangle is never orphaned).
        opacity = torch.sigmoid(bound.opacity_logits)
        child_opacity = torch.sigmoid(children["opacity_logits"])
        prune = keep_one_per_triangle(torch.cat([split | (opacity < cfg.min_opacity), torch.zeros_like(child_opacity, dtype=torch.bool)]),
                                      torch.cat([bound.binding, children["binding"]]),
                                      torch.cat([opacity, child_opacity]))[:G]
        keep = ~prune
    new = {f: torch.cat([getattr(bound, f).detach()[keep], children[f]]).requires_grad_(True)
           for f in ("local_means", "log_scales", "quats", "opacity_logits", "sh")}
    _resize_optimizer(opt, list(new), new, keep, parents)
    out = BoundGaussians(binding=torch.cat([bound.binding[keep], children["binding"]]), **new)
    stats = {"cloned": len(clones), "split": len(sp), "pruned": int(prune.sum()) - len(sp), "gaussians": len(out)}
    return out, DensifyState.zeros(len(out)), stats


__all__ = ["DensifyConfig", "DensifyState", "densify_and_prune", "keep_one_per_triangle"]
