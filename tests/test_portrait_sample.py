"""IM-Portrait's sampler (morph4d.portrait.sample): the first-frame guidance schedule and the two-scale guidance."""

import math

import torch

from morph4d.cameras import Cameras, look_at
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig
from morph4d.portrait.mpi import plane_depths
from morph4d.portrait.sample import CONDITION_CHANNELS, first_frame_scales, sample_clip


def test_first_frame_guidance_falls_to_zero_at_the_middle_of_the_clip():
    s = first_frame_scales(32)
    assert s[0] == 1.0 and s[15] > 0 and (s[16:] == 0).all()            # the supplement: 16 + 16 frames
    assert torch.allclose(s[:16], torch.linspace(1, 0, 17)[:16])
    assert (first_frame_scales(1) == 0).all()


def test_unit_scales_give_the_conditional_prediction_and_seeds_repeat():
    cfg = PortraitUNetConfig.preset("tiny")
    net = PortraitUNet(cfg, generator=torch.Generator().manual_seed(0)).eval()
    S, F = cfg.sample_size, 3
    R, t = look_at(torch.tensor([[0.0, 0.0, 0.75]]), torch.zeros(1, 3))
    f = S / (2 * math.tan(math.radians(13)))
    cam = Cameras(R, t, torch.tensor([[[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]]]), S, S)
    g = torch.Generator().manual_seed(1)
    cond = torch.cat([torch.rand(F, 3, S, S, generator=g) * 2 - 1, torch.ones(F, 1, S, S),
                      torch.rand(F, 3, S, S, generator=g) * 2 - 1, torch.rand(F, 4, S, S, generator=g)], 1)
    ref = torch.rand(6, S, S, generator=g) * 2 - 1
    depths = plane_depths(0.75, cfg.planes).float()
    d = Diffusion(DiffusionConfig(snr_shift_scale=1.0))
    out = sample_clip(net, d, cond, ref, depths, cam, 1, torch.Generator().manual_seed(2),
                      first_scales=torch.ones(F), reference_scale=1.0)
    x = torch.randn(1, F, 3, S, S, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        direct = net(torch.cat([x[0], cond], 1)[None], d.timesteps(1).view(1), ref[None])
    assert all(torch.allclose(out[k], direct[k][0], atol=1e-6) for k in out)
    # reference scale 0: the first-frame term alone, whose input has no reference and no reference projection
    first_only = sample_clip(net, d, cond, ref, depths, cam, 1, torch.Generator().manual_seed(2),
                             first_scales=torch.ones(F), reference_scale=0.0)
    stripped = cond.clone()
    stripped[:, CONDITION_CHANNELS:] = 0
    with torch.no_grad():
        direct = net(torch.cat([x[0], stripped], 1)[None], d.timesteps(1).view(1), torch.zeros_like(ref)[None])
    assert all(torch.allclose(first_only[k], direct[k][0], atol=1e-6) for k in out)
    again = sample_clip(net, d, cond, ref, depths, cam, 2, torch.Generator().manual_seed(3))
    same = sample_clip(net, d, cond, ref, depths, cam, 2, torch.Generator().manual_seed(3))
    assert all(torch.equal(again[k], same[k]) for k in again)
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in again.values())
    assert again["alpha"].shape == (F, cfg.planes, 1, S, S)
