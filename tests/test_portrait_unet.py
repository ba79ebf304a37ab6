"""IM-Portrait's space-time U-Net (morph4d.models.portrait_unet): shapes, the zero-initialised links and
temporal layers (per-frame image model at initialisation, geometry blind to the reference until its links
train), seeding, save/load and bad input."""

import pytest
import torch

from morph4d.models.mmvdm import MMVDM, MMVDMConfig
from morph4d.models.portrait_unet import FRAME_CHANNELS, PROJECTION_CHANNELS, PortraitUNet, PortraitUNetConfig

CFG = PortraitUNetConfig.preset("tiny")
S = CFG.sample_size


@pytest.fixture(scope="module")
def net():
    return PortraitUNet(CFG, generator=torch.Generator().manual_seed(0)).eval()


def inputs(seed: int, frames: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, frames, CFG.frame_channels, S, S, generator=g), torch.tensor([10, 900]),
            torch.randn(2, 6, S, S, generator=g))


def test_outputs_are_an_mpi_per_frame(net):
    with torch.no_grad():
        out = net(*inputs(0))
    assert out["front"].shape == out["residual"].shape == (2, 3, 3, S, S)
    assert out["alpha"].shape == (2, 3, CFG.planes, 1, S, S)
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in out.values())


def test_at_initialisation_frames_are_independent_and_geometry_ignores_the_reference(net):
    x, t, ref = inputs(1)
    y = x.clone()
    y[:, 1:] = torch.randn(y[:, 1:].shape, generator=torch.Generator().manual_seed(5))   # other frames changed
    other_ref = torch.randn(ref.shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, b, c = net(x, t, ref), net(y, t, ref), net(x, t, other_ref)
    assert torch.allclose(a["front"][:, 0], b["front"][:, 0], atol=1e-6)        # zero temporal layers
    assert torch.allclose(a["alpha"][:, 0], b["alpha"][:, 0], atol=1e-6)
    assert torch.allclose(a["alpha"], c["alpha"], atol=1e-6)                    # zero links
    assert not torch.allclose(a["front"], c["front"], atol=1e-4)                 # colour sees the reference
    # once the links and temporal layers are trained (here: perturbed), both dependencies appear
    trained = PortraitUNet(CFG, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        for p in list(trained.links.parameters()) + [p for n, p in trained.named_parameters() if "temporal" in n]:
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(7))
        a, b, c = trained(x, t, ref), trained(y, t, ref), trained(x, t, other_ref)
    assert not torch.allclose(a["front"][:, 0], b["front"][:, 0], atol=1e-5)
    assert not torch.allclose(a["alpha"], c["alpha"], atol=1e-5)


def test_a_seed_gives_the_same_network_and_gradients_reach_every_parameter():
    a = PortraitUNet(CFG, generator=torch.Generator().manual_seed(3))
    b = PortraitUNet(CFG, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    out = a(*inputs(2, frames=2))
    (out["front"].mean() + out["residual"].mean() + out["alpha"].mean()).backward()
    assert all(p.grad is not None for p in a.parameters())


def test_save_load_round_trip_and_refusals(net, tmp_path):
    net.save_pretrained(tmp_path / "unet")
    again = PortraitUNet.from_pretrained(tmp_path / "unet").eval()
    x = inputs(4)
    with torch.no_grad():
        assert torch.equal(net(*x)["alpha"], again(*x)["alpha"])
    MMVDM(MMVDMConfig(num_layers=1, num_attention_heads=1, attention_head_dim=16, time_embed_dim=16)) \
        .save_pretrained(tmp_path / "mmvdm")
    with pytest.raises(ValueError, match="MMVDM"):
        PortraitUNet.from_pretrained(tmp_path / "mmvdm")                         # the other system's network
    with pytest.raises(ValueError, match="expects frames"):
        net(torch.zeros(1, 2, CFG.frame_channels, S * 2, S * 2), torch.tensor([1]), torch.zeros(1, 6, S * 2, S * 2))
    with pytest.raises(ValueError, match="expects frames"):                      # no projection channels
        net(torch.zeros(1, 2, FRAME_CHANNELS, S, S), torch.tensor([1]), torch.zeros(1, 6, S, S))
    with pytest.raises(ValueError, match="multiple of 32"):
        PortraitUNetConfig(sample_size=48)
    with pytest.raises(ValueError, match="unknown IM-Portrait U-Net preset"):
        PortraitUNetConfig.preset("huge")


def test_our_extensions_are_switches_and_the_paper_preset_is_the_supplements_network():
    paper = PortraitUNetConfig.preset("paper")
    assert not paper.projection and paper.detail == 0 and paper.frame_channels == FRAME_CHANNELS
    assert CFG.projection and CFG.frame_channels == FRAME_CHANNELS + PROJECTION_CHANNELS
    plain = PortraitUNet(PortraitUNetConfig.preset("tiny", projection=False, detail=0))
    assert plain.color.stem[0].in_channels == FRAME_CHANNELS and plain.color_head.detail is None
    assert isinstance(plain.color_head.out, torch.nn.Conv2d)                     # the supplement's last conv


def test_the_detail_path_carries_full_resolution_input_to_the_outputs(net):
    """One input pixel of the projection changes the outputs near it through the full-resolution path; without
    that path the 1/8 stem spreads it over a whole 8 x 8 cell, as a block (the network's two upsampling heads)."""
    x, t, ref = inputs(8, frames=1)
    y = x.clone()
    y[:, 0, FRAME_CHANNELS:FRAME_CHANNELS + 3, 13, 13] += 1.0
    with torch.no_grad():
        delta = (net(y, t, ref)["front"] - net(x, t, ref)["front"]).abs().sum((0, 1, 2))
        only_detail = net.color_head.detail(y[:, 0]) - net.color_head.detail(x[:, 0])
    assert float(delta[13, 13]) > 0 and float(only_detail.abs().sum((0, 1))[11:16, 11:16].sum()) > 0
    assert float(only_detail.abs().sum((0, 1))[:8, :8].sum()) == 0                # local: two 3x3 convs
