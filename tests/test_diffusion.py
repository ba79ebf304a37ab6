"""Schedule, parameterisation and loss (one place), DDIM, generation modes and guidance wrappers."""

import pytest
import torch

from morph4d.diffusion.sampling import angular_guidance_scales, ddim_sample, guided, mode_mask, multiview_guided
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig

SHAPE = (2, 3, 4, 2, 3, 3)  # (B, V, F, C, h, w)


@pytest.fixture(scope="module")
def diff():
    return Diffusion()


def test_cogvideox_schedule(diff):
    ab = diff.alphas_cumprod
    assert ab.shape == (1000,) and (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 1e-6  # zero terminal SNR: the last step is pure noise
    ts = diff.timesteps(50)
    assert len(ts) == 50 and ts[0] == 999 and (ts[:-1] > ts[1:]).all()  # trailing spacing starts at T - 1
    with pytest.raises(ValueError, match="num_steps"):
        diff.timesteps(0)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        DiffusionConfig(prediction="eps")


@pytest.mark.parametrize("cfg", [DiffusionConfig(), DiffusionConfig(prediction="eps", zero_terminal_snr=False)])
def test_split_inverts_the_target(cfg):
    d = Diffusion(cfg)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 700])
    x_t = d.add_noise(x0, noise, t)
    x0_hat, eps_hat = d.split(d.target(x0, noise, t), x_t, t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, noise)


def test_loss_counts_generated_latents_only(diff):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = torch.tensor([100, 900])
    perfect = diff.target(x0, noise, t)
    generate = torch.ones(SHAPE[:3], dtype=torch.bool)
    generate[:, 0] = False  # view 0 given
    assert diff.loss(perfect, x0, noise, t, generate) == 0
    wrong_on_given = perfect.clone()
    wrong_on_given[:, 0] += 5.0
    assert diff.loss(wrong_on_given, x0, noise, t, generate) == 0
    wrong = perfect.clone()
    wrong[:, 1] += 1.0
    assert diff.loss(wrong, x0, noise, t, generate) == pytest.approx(0.5)  # 1 of 2 generated views off by 1
    with pytest.raises(ValueError, match=r"\(B, V, F\)"):
        diff.loss(perfect, x0, noise, t, generate[0])


def gaussian_denoiser(diff, mean, std):
    """The exact E[x0 | x_t] for data x0 ~ N(mean, std^2) per element."""
    def denoise(x, t):
        a, s = diff.coefficients(t, x)
        return mean + a * std ** 2 / (a ** 2 * std ** 2 + s ** 2) * (x - a * mean)
    return denoise


def test_ddim_step_is_exact_for_unit_gaussian_data(diff):
    """For x0 ~ N(0, 1) the exact denoiser is a x_t, and each DDIM step multiplies x by
    a_prev a_t + s_prev s_t (the cosine of the step's angle): the whole run is that product times the noise."""
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 2, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    x = ddim_sample(gaussian_denoiser(diff, 0.0, 1.0), diff, noise, 20)
    ab = diff.alphas_cumprod
    ts = diff.timesteps(20).tolist()
    factor = 1.0
    for i, t in enumerate(ts):
        prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        factor *= (prev.sqrt() * ab[t].sqrt() + (1 - prev).sqrt() * (1 - ab[t]).sqrt()).item()
    torch.testing.assert_close(x, factor * noise, rtol=1e-10, atol=1e-12)


def test_ddim_converges_to_the_data_distribution(diff):
    """With the exact denoiser of N(0.7, 0.3^2) data, the mean is right at any step count and the spread
    approaches 0.3 as steps increase (DDIM's discretisation error is O(1/steps))."""
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(4, 2, 5, 4, 8, 8, generator=g, dtype=torch.float64)
    stds = []
    for steps in (50, 200, 1000):
        x = ddim_sample(gaussian_denoiser(diff, 0.7, 0.3), diff, noise, steps)
        assert x.mean().item() == pytest.approx(0.7, abs=0.01)
        stds.append(x.std().item())
    assert stds[0] < stds[1] < stds[2] < 0.3 and stds[2] == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("mode", [1, 2, 3, 4])
def test_given_latents_stay_exactly_as_given(diff, mode):
    g = torch.Generator().manual_seed(3)
    B, V, F = 2, 4, 5
    noise = torch.randn(B, V, F, 2, 3, 3, generator=g)
    given = torch.randn(noise.shape, generator=g)
    mask = mode_mask(mode, V, F).expand(B, V, F)
    seen = []

    def denoise(x, t):  # also checks the network always sees the given latents clean
        seen.append(torch.equal(x[mask], given[mask]))
        return 0.5 * x
    out = ddim_sample(denoise, diff, noise, 10, given=given, given_mask=mask, eta=0.5, generator=g)
    assert all(seen) and torch.equal(out[mask], given[mask])
    if mode != 1:
        assert not torch.equal(out[~mask], given[~mask])


def test_anchor_keeps_what_is_known_and_leaves_the_rest_to_the_network(diff):
    """ddim_sample's anchor (ours, issue 17): weight 1 returns the anchor exactly, weight 0 is the plain sampler,
    and in between each pixel lands between the two; the network sees the anchored sample at every step."""
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 2, 3, 4, 5, 5, generator=g, dtype=torch.float64)
    anchor = torch.randn(noise.shape, generator=g, dtype=torch.float64)
    denoise = gaussian_denoiser(diff, 0.7, 0.3)
    plain = ddim_sample(denoise, diff, noise, 10)
    w = torch.zeros(1, 2, 3, 1, 5, 5, dtype=torch.float64)
    w[..., :2, :] = 1.0
    w[..., 2, :] = 0.5
    out = ddim_sample(denoise, diff, noise, 10, anchor=anchor, anchor_weight=w)
    torch.testing.assert_close(out[..., :2, :], anchor[..., :2, :], rtol=0, atol=1e-12)
    mid = out[..., 2, :]
    lo, hi = torch.minimum(anchor[..., 2, :], plain[..., 2, :]), torch.maximum(anchor[..., 2, :], plain[..., 2, :])
    assert ((mid >= lo - 1e-6) & (mid <= hi + 1e-6)).float().mean() > 0.9
    torch.testing.assert_close(ddim_sample(denoise, diff, noise, 10, anchor=anchor, anchor_weight=torch.zeros_like(w)),
                               plain)
    # the pixels the anchor leaves alone still feel it through the network (here: a denoiser mixing pixels)
    mixing = lambda x, t: x.mean((-1, -2), keepdim=True).expand_as(x)  # noqa: E731
    a = ddim_sample(mixing, diff, noise, 10, anchor=anchor, anchor_weight=w)[..., 3:, :]
    b = ddim_sample(mixing, diff, noise, 10)[..., 3:, :]
    assert not torch.allclose(a, b)


def test_same_seed_same_output(diff):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(SHAPE, generator=g)
        return ddim_sample(lambda x, t: 0.9 * x, diff, noise, 8, eta=1.0, generator=g)
    assert torch.equal(run(4), run(4)) and not torch.equal(run(4), run(5))


def test_mode_masks():
    assert not mode_mask(1, 4, 13).any()
    assert mode_mask(2, 8, 13).sum(1).tolist() == [13] * 4 + [0] * 4
    m3 = mode_mask(3, 8, 13)
    assert m3[:, :3].all() and not m3[:, 3:].any()
    m4 = mode_mask(4, 8, 13, given_views=[4, 5, 6, 7])
    assert m4[4:].all() and m4[:4, :3].all() and not m4[:4, 3:].any()
    with pytest.raises(ValueError, match="mode must be"):
        mode_mask(5, 2, 2)
    with pytest.raises(ValueError, match="some but not all"):
        mode_mask(2, 1, 13)
    with pytest.raises(ValueError, match="given latent frames"):
        mode_mask(3, 2, 3)


def test_guidance_scale_one_is_the_conditional_prediction():
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(SHAPE, generator=g), torch.tensor([5, 5])
    cond, uncond = (lambda x, t: 2 * x + 1), (lambda x, t: -x)
    assert guided(cond, uncond, 1.0) is cond
    torch.testing.assert_close(guided(cond, uncond, torch.ones(SHAPE[1]))(x, t), cond(x, t))
    scales = torch.tensor([1.0, 1.5, 2.0])
    out = guided(cond, uncond, scales)(x, t)
    for v in range(3):
        torch.testing.assert_close(out[:, v], (-x + scales[v] * (3 * x + 1))[:, v])


def test_multiview_guidance_runs_each_generated_view_alone():
    def joint(x, t):  # mixes information across views: a joint pass is not a per-view pass
        return x + x.mean(dim=1, keepdim=True) * (1 + t.view(-1, 1, 1, 1, 1, 1))
    calls = []

    def single(x, t):
        calls.append(len(x))
        return joint(x, t)
    cond = lambda x, t: 3 * x + 1  # noqa: E731
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(SHAPE, generator=g), torch.tensor([3, 9])
    scales = torch.tensor([1.0, 1.5, 2.0])
    B, V = SHAPE[:2]
    out = multiview_guided(cond, single, scales, torch.ones(B, V, dtype=torch.bool))(x, t)
    alone = torch.cat([joint(x[:, v: v + 1], t) for v in range(V)], dim=1)   # each view's uncond alone
    torch.testing.assert_close(out, alone + scales.view(1, -1, 1, 1, 1, 1) * (cond(x, t) - alone))
    assert calls == [B * V] and not torch.allclose(alone, joint(x, t))
    # views given whole (the sampler keeps them clean) skip the pass: the others are unchanged, theirs is cond
    needed = torch.tensor([[True, False, True]] * B)
    part = multiview_guided(cond, single, scales, needed)(x, t)
    assert calls[-1] == int(needed.sum())
    torch.testing.assert_close(part[:, needed[0]], out[:, needed[0]])
    torch.testing.assert_close(part[:, 1], cond(x, t)[:, 1])


def test_angular_guidance_scales():
    s = angular_guidance_scales([0.0, 90.0, 180.0, 30.0], [0.0, 0.0, 0.0, 0.0], [0.0], [0.0])
    torch.testing.assert_close(s, torch.tensor([1.1, 1.35, 1.6, 1.1 + 0.5 / 6]))
    two_refs = angular_guidance_scales([170.0], [0.0], [0.0, 180.0], [0.0, 0.0])  # nearest reference counts
    torch.testing.assert_close(two_refs, torch.tensor([1.1 + 0.5 * 10 / 180]))
