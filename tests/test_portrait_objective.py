"""IM-Portrait's training objective (morph4d.portrait.objective): L_mpi / L_side camera plumbing, the
supplement's terms, condition dropout rates and the two stages' parameters."""

import math

import pytest
import torch

from morph4d.cameras import Cameras, look_at
from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig
from morph4d.portrait.mpi import MPI, head_distance, orbit_about, plane_colors, plane_depths, render_mpi
from morph4d.portrait.objective import choose_loss, drop_conditions, render_losses, trainable

HEAD = torch.tensor([0.0, 0.02, 0.0], dtype=torch.float64)
S, P = 24, 6


def camera() -> Cameras:
    R, t = look_at(torch.tensor([[0.0, 0.02, 0.75]], dtype=torch.float64), HEAD[None])
    f = S / (2 * math.tan(math.radians(13)))
    K = torch.tensor([[[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]]], dtype=torch.float64)
    return Cameras(R.float(), t.float(), K.float(), S, S)


def flat_output(front: torch.Tensor, plane: int = 3) -> dict:
    """A network output whose MPI is one opaque plane showing ``front`` (1 item, 1 frame)."""
    alpha = torch.zeros(1, 1, P, 1, S, S)
    alpha[:, :, plane] = 1
    return {"front": front[None, None].clone().requires_grad_(), "residual": torch.rand(1, 1, 3, S, S),
            "alpha": alpha}


def test_a_perfect_mpi_costs_nothing_and_side_views_use_the_reference_camera():
    cam = camera()
    depths = plane_depths(head_distance(cam, HEAD), P)[None].float()
    front = torch.rand(3, S, S, generator=torch.Generator().manual_seed(0))
    out = flat_output(front)
    ones = torch.ones(1, 1, 1, S, S)
    # L_mpi: built in the target camera and rendered into it -> the frontal image itself
    same = render_losses(out, front[None, None], ones, depths, [cam], [cam])
    assert float(same["total"]) < 1e-10
    # L_side: the target is what the MPI built in the reference camera shows from a side camera (partly
    # off the plane: the matte is that render's opacity)
    side = orbit_about(cam, HEAD, 5.0)
    mpi = MPI(plane_colors(front, out["residual"][0, 0], out["alpha"][0, 0]), out["alpha"][0, 0], depths[0], cam)
    seen = render_mpi(mpi, side, background=1.0, fast=False)
    target, matte = seen.rgb[None], seen.alpha[None]
    right = render_losses(out, target, matte, depths, [cam], [side])
    wrong = render_losses(out, target, matte, depths, [side], [side])     # as if built in the target camera
    assert float(right["image"]) < 1e-10 and float(wrong["image"]) > 1e-3
    right["total"].backward()
    assert out["front"].grad is not None


def test_terms_carry_the_supplements_weights():
    cam = camera()
    depths = plane_depths(head_distance(cam, HEAD), P)[None].float()
    out = flat_output(torch.full((3, S, S), 0.5))
    target, matte = torch.zeros(1, 1, 3, S, S), torch.zeros(1, 1, 1, S, S)
    t = render_losses(out, target, matte, depths, [cam], [cam], target_disparity=torch.zeros(1, 1, 1, S, S))
    assert float(t["image"]) == pytest.approx(0.25, rel=1e-5)            # (0.5 - 0)^2, weight 1
    assert float(t["mask"]) == pytest.approx(0.01, rel=1e-5)             # (1 - 0)^2, weight 0.01
    assert float(t["smooth"]) == pytest.approx(0.0, abs=1e-8)            # one plane: flat disparity
    assert float(t["total"]) == pytest.approx(sum(float(v) for k, v in t.items() if k != "total"))


def test_condition_dropout_rates_and_loss_choice():
    g = torch.Generator().manual_seed(0)
    frames, ref = torch.ones(4000, 1, 14, 2, 2), torch.ones(4000, 6, 2, 2)
    f2, r2, drop_first, drop_ref = drop_conditions(frames, ref, g)
    assert abs(float(drop_first.float().mean()) - 0.7) < 0.03 and abs(float(drop_ref.float().mean()) - 0.1) < 0.02
    assert (f2[drop_first, :, 3:7] == 0).all() and (f2[~drop_first, :, 3:10] == 1).all() and (f2[:, :, :3] == 1).all()
    assert (f2[drop_ref, :, 10:] == 0).all() and (f2[~drop_ref, :, 10:] == 1).all()    # projection goes with the ref
    assert (r2[drop_ref] == 0).all() and (r2[~drop_ref] == 1).all() and (frames == 1).all()
    picks = [choose_loss(g) for _ in range(2000)]
    assert abs(picks.count("mpi") / 2000 - 0.8) < 0.03


def test_stages_train_the_supplements_parameters():
    net = PortraitUNet(PortraitUNetConfig.preset("tiny"))
    boot, geo = trainable(net, "bootstrap"), trainable(net, "geometry")
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(net.color.parameters()) <= ids(boot) and not ids(net.geometry.parameters()) & ids(boot)
    assert ids(net.geometry.parameters()) <= ids(geo) and ids(net.links.parameters()) <= ids(geo)
    assert not ids(net.color.parameters()) & ids(geo)
    assert ids(boot) & ids(geo) == ids(net.color_head.out.parameters())   # the colour output layer trains in both
    with pytest.raises(ValueError, match="unknown IM-Portrait training stage"):
        trainable(net, "all")
