"""3DGS density control on bound Gaussians: clone small / split large high-gradient Gaussians, prune transparent
ones while every triangle keeps one, and move Adam's moments with their Gaussians."""

import torch

from morph4d.avatar.gaussians import BoundGaussians
from morph4d.avatar.gaussians.densify import DensifyConfig, DensifyState, densify_and_prune, keep_one_per_triangle

FIELDS = ("local_means", "log_scales", "quats", "opacity_logits", "sh")


def _setup():
    g = BoundGaussians.one_per_triangle(torch.tensor([0, 0, 1, 2, 3]), sh_degree=1)
    g.log_scales[1] = 0.5  # Gaussian 1 is larger than its triangle: it splits
    g.opacity_logits[:] = 2.0
    g.opacity_logits[2] = -9.0  # transparent, alone on triangle 1: spared
    g.opacity_logits[0] = -9.0  # transparent, triangle 0 keeps its other Gaussians: pruned
    for f in FIELDS:
        getattr(g, f).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [getattr(g, f)], "lr": 1e-2, "name": f} for f in FIELDS])
    sum(getattr(g, f).sum() * (i + 1) for i, f in enumerate(FIELDS)).backward()
    opt.step()
    state = DensifyState.zeros(5)
    state.add(torch.tensor([1, 3]), torch.tensor([[1e-3, 0.0], [0.0, 2e-3]]), width=128)  # 0.064, 0.128 NDC
    state.add(torch.tensor([4]), torch.tensor([[1e-7, 0.0]]), width=128)  # below the threshold
    return g, opt, state


def test_clone_split_prune_keep_one_per_triangle():
    g, opt, state = _setup()
    before = {f: getattr(g, f).detach().clone() for f in FIELDS}
    moments = opt.state[g.sh]["exp_avg"].clone()
    out, new_state, stats = densify_and_prune(g, state, DensifyConfig(), opt, generator=torch.Generator().manual_seed(0))
    assert stats == {"cloned": 1, "split": 1, "pruned": 1, "gaussians": 6}
    # kept: 2 (spared), 3 (cloned parent), 4; then the clone of 3 and two children of 1 (both on triangle 0)
    assert out.binding.tolist() == [1, 2, 3, 2, 0, 0]
    assert torch.equal(out.sh[:3].detach(), before["sh"][[2, 3, 4]]) and torch.equal(out.sh[3].detach(), before["sh"][3])
    assert torch.allclose(out.log_scales[4:].detach(), before["log_scales"][[1, 1]] - torch.log(torch.tensor(1.6)))
    assert not torch.equal(out.local_means[4], out.local_means[5])  # split children are sampled apart
    for f in FIELDS:  # the optimizer holds the new tensors, with moments that moved with their Gaussians
        group = next(gr for gr in opt.param_groups if gr["name"] == f)
        assert group["params"][0] is getattr(out, f)
        assert opt.state[getattr(out, f)]["exp_avg"].shape == getattr(out, f).shape
    m = opt.state[out.sh]["exp_avg"]
    assert torch.equal(m[:3], moments[[2, 3, 4]]) and not m[3:].any()
    assert len(new_state.count) == 6 and not new_state.count.any()
    loss = out.sh.sum() + out.local_means.sum()
    loss.backward()
    opt.step()  # Adam steps on the resized state


def test_keep_one_per_triangle_spares_the_most_opaque():
    binding = torch.tensor([0, 0, 0, 1, 1, 2])
    prune = torch.tensor([True, True, True, True, False, True])
    score = torch.tensor([0.1, 0.3, 0.2, 0.9, 0.5, 0.0])
    assert keep_one_per_triangle(prune, binding, score).tolist() == [True, False, True, True, False, False]


def test_budget_limits_growth():
    g, opt, state = _setup()
    out, _, stats = densify_and_prune(g, state, DensifyConfig(max_gaussians=6), opt,
                                      generator=torch.Generator().manual_seed(0))
    assert stats["cloned"] + stats["split"] == 1 and stats["split"] == 0  # only the strongest (3, a clone)
