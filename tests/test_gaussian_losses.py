"""4D avatar losses and UV deformation (MVP4D S2.4 on GaussianAvatars / CAP4D): SSIM against hand values,
the loss weights, regularisers at their thresholds, the velocity terms (Eq. S4, S5), the Laplacian, the
zero-initialised U-Net, the frame embedding, UV lookups, back-face tests and dropout, LPIPS loading."""

import math

import pytest
import torch

from morph4d.avatar.gaussians import BoundGaussians, quaternion_multiply
from morph4d.avatar.gaussians.deform import (
    DeformationUNet,
    DeformationUNetConfig,
    frame_embedding,
    gaussian_uvs,
    sample_uv,
    uv_positional_encoding,
)
from morph4d.avatar.gaussians.losses import (
    LossWeights,
    backface_dropout,
    edge_loss,
    facing_camera,
    laplacian_loss,
    lpips_from_path,
    never_facing,
    position_loss,
    scale_loss,
    total_loss,
    velocity_deform_loss,
    velocity_rotation_loss,
)
from morph4d.cameras import orbit_cameras
from morph4d.heads.builtin import load_builtin_head
from morph4d.metrics import SSIM_C1, ssim, ssim_map


def images(seed=0, shape=(2, 3, 32, 32)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- photometric -------------------------------------------------------------------------------------

def test_ssim_identity_and_noise():
    x = images()
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    small, large = ssim(x, x + 0.05 * noise), ssim(x, x + 0.3 * noise)
    assert 1.0 > small.item() > large.item()


def test_ssim_constant_images_hand_computed():
    # Constant a vs b: variances and covariance vanish away from the zero-padded border, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) * (C2 / C2).
    a, b = 0.3, 0.6
    # float64: in float32, E[x^2] - E[x]^2 cancels to ~1e-8, which is ~1e-5 of C2.
    m = ssim_map(torch.full((1, 1, 32, 32), a, dtype=torch.float64), torch.full((1, 1, 32, 32), b, dtype=torch.float64))
    expected = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    assert m[0, 0, 16, 16].item() == pytest.approx(expected, abs=1e-10)
    assert m[0, 0, 5:27, 5:27].sub(expected).abs().max().item() < 1e-10
    assert m[0, 0, 0, 0].item() < expected  # the zero padding darkens the border window
    m32 = ssim_map(torch.full((1, 1, 32, 32), a), torch.full((1, 1, 32, 32), b))
    assert m32[0, 0, 16, 16].item() == pytest.approx(expected, abs=1e-4)


def test_photometric_weights_and_total():
    w = LossWeights()
    assert (w.l1, w.dssim, w.lpips) == (0.8, 0.2, 0.1)
    assert (w.velocity_rotation, w.velocity_deform, w.laplacian) == (0.005, 0.4, 1.0)
    assert (w.position, w.position_threshold, w.scale, w.scale_threshold) == (0.01, 1.0, 1.0, 0.6)
    render, target = images(0), images(1)
    mu, s = torch.zeros(4, 3), torch.zeros(4, 3)
    loss, terms = total_loss(render, target, local_means=mu, log_scales=s)
    assert terms["l1"].item() == pytest.approx(0.8 * (render - target).abs().mean().item(), rel=1e-6)
    assert terms["dssim"].item() == pytest.approx(0.2 * (1 - ssim(render, target).item()), rel=1e-5)
    assert terms["edge"].item() == pytest.approx(0.1 * edge_loss(render, target).item(), rel=1e-6)
    assert "lpips" not in terms and terms["edge"].item() > 0
    assert loss.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)
    _, same = total_loss(target, target, local_means=mu, log_scales=s)
    assert same["l1"].item() == 0 and same["edge"].item() == 0 and abs(same["dssim"].item()) < 1e-6


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in torch 2.13
def test_lpips_from_path(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        lpips_from_path(tmp_path / "missing.pt")

    # No real LPIPS backbone can be downloaded here: a scripted stand-in checks the plumbing only.
    class Dist(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x - y).abs().mean(dim=(1, 2, 3))

    path = tmp_path / "lpips.pt"
    torch.jit.script(Dist()).save(str(path))
    lpips = lpips_from_path(path)
    render, target = images(0), images(1)
    # Images go in as [0, 1] and reach the net in [-1, 1]: distances double.
    assert lpips(render, target).item() == pytest.approx(2 * (render - target).abs().mean().item(), rel=1e-5)
    _, terms = total_loss(render, target, local_means=torch.zeros(1, 3), log_scales=torch.zeros(1, 3),
                          lpips=lpips, lpips_weight=0.05)
    assert "edge" not in terms and terms["lpips"].item() == pytest.approx(0.05 * lpips(render, target).item())


# --- regularisers ------------------------------------------------------------------------------------

def test_position_and_scale_thresholds():
    inside = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.99]])
    assert position_loss(inside).item() == 0
    assert position_loss(torch.tensor([[0.0, 1.5, 0.0]])).item() == pytest.approx(0.5)
    assert position_loss(torch.tensor([[0.0, 1.5, 0.0]]), threshold=2.0).item() == 0  # CAP4D's threshold
    assert scale_loss(torch.full((3, 3), math.log(0.5))).item() == 0
    assert scale_loss(torch.full((1, 3), math.log(0.8))).item() == pytest.approx(0.2 * math.sqrt(3), rel=1e-5)


def test_velocity_rotation_known_angle():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1)
    same = q[None].repeat(3, 1, 1).requires_grad_()
    loss = velocity_rotation_loss(same)
    loss.backward()
    assert loss.item() < 1e-12 and torch.isfinite(same.grad).all()
    theta = 0.3
    qz = torch.tensor([math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]).expand(5, 4)
    q1 = quaternion_multiply(q, qz)  # R_{f+1} = R_f R_z(theta): R_f^T R_{f+1} = R_z(theta)
    assert velocity_rotation_loss(torch.stack([q, q1])).item() == pytest.approx(theta ** 2, rel=1e-4)
    # The sign of a quaternion does not change its rotation.
    assert velocity_rotation_loss(torch.stack([q, -q1])).item() == pytest.approx(theta ** 2, rel=1e-4)


def test_velocity_deform():
    d = torch.zeros(3, 4, 3)
    assert velocity_deform_loss(d).item() == 0
    d[1:, :, 0] = 0.5  # a jump of 0.5 between frames 0 and 1, none between 1 and 2
    assert velocity_deform_loss(d).item() == pytest.approx(0.25 / 2)


def test_laplacian_zero_on_affine_map():
    i, j = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    i, j = i.double(), j.double()
    affine = torch.stack([0.3 + 0.1 * i - 0.2 * j, 2 * j, -i])[None]  # (1, 3, 16, 16)
    assert laplacian_loss(affine).item() < 1e-24
    assert laplacian_loss((i * i)[None, None]).item() == pytest.approx(4.0)  # Laplacian of i^2 is 2


# --- deformation network -----------------------------------------------------------------------------

def test_frame_embedding():
    e = frame_embedding(torch.arange(10), 10)
    assert e.shape == (10, 8) and e.abs().max() <= 1.0
    assert torch.cdist(e, e).add(torch.eye(10) * 10).min() > 1e-3  # distinct frames, distinct embeddings
    with pytest.raises(ValueError):
        frame_embedding(torch.arange(3), 3, channels=7)


def test_unet_zero_init_then_learns():
    cfg = DeformationUNetConfig.tiny()
    net = DeformationUNet(cfg, generator=torch.Generator().manual_seed(0))
    assert uv_positional_encoding(cfg.size, cfg.uv_frequencies).shape == (cfg.in_channels - 8, 16, 16)
    out = net(torch.arange(3), 3)
    assert out.shape == (3, 3, 16, 16) and (out == 0).all()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    (net(torch.arange(3), 3) - 1).pow(2).mean().backward()
    opt.step()
    after = net(torch.arange(3), 3)
    assert after.abs().min() > 0 and not torch.equal(after[0], after[1])  # frame-dependent
    seeded = [DeformationUNet(cfg, generator=torch.Generator().manual_seed(0)).state_dict() for _ in range(2)]
    assert all(torch.equal(seeded[0][k], seeded[1][k]) for k in seeded[0])  # the generator fixes the init
    default = DeformationUNet(DeformationUNetConfig.default(), generator=torch.Generator().manual_seed(0))
    assert default(torch.tensor([4]), 10).shape == (1, 3, 128, 128)


def test_sample_uv_texels():
    S = 4
    m = torch.arange(S * S, dtype=torch.float32).reshape(1, 1, S, S)  # value = 4 * row + col
    m = torch.cat([m, 10 * m])  # (F=2, 1, S, S)
    uv = torch.tensor([[0.125, 0.625],  # texel centre: col 0, row 2 -> 8
                       [0.875, 0.125],  # col 3, row 0 -> 3
                       [0.0, 0.0],      # corner: clamped to texel (0, 0) -> 0
                       [1.0, 1.0],      # corner: texel (3, 3) -> 15
                       [0.5, 0.5]])     # centre: mean of texels 5, 6, 9, 10 -> 7.5
    out = sample_uv(m, uv)
    assert out.shape == (2, 5, 1)
    assert torch.allclose(out[0, :, 0], torch.tensor([8.0, 3.0, 0.0, 15.0, 7.5]))
    assert torch.allclose(out[1], 10 * out[0])


def test_gaussian_uvs_are_triangle_centroids():
    model = load_builtin_head()
    bound = BoundGaussians.one_per_triangle(torch.tensor([0, 7, 3, 7]))
    uv = gaussian_uvs(model, bound)
    assert uv.shape == (4, 2) and torch.equal(uv[1], uv[3])
    tri = model.uv_faces[7]
    assert torch.allclose(uv[1], model.uvs[tri].mean(0))


# --- back faces --------------------------------------------------------------------------------------

def front_camera():
    return orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 1.0, 30.0, 32, 32)  # on +z, looking at 0


TRI = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])  # counter-clockwise seen from +z


def test_facing_camera_and_flip():
    cams = front_camera()
    faces = torch.tensor([[0, 1, 2], [0, 2, 1]])  # the same triangle, then flipped
    assert facing_camera(TRI, faces, cams).tolist() == [[True, False]]
    assert facing_camera(TRI[None], faces, cams).tolist() == [[True, False]]


def test_never_facing():
    faces = torch.tensor([[0, 1, 2], [0, 2, 1]])
    still = TRI[None].repeat(2, 1, 1)
    assert never_facing(still, faces, front_camera()).tolist() == [False, True]
    turned = TRI * torch.tensor([-1.0, 1.0, -1.0])  # rotated 180 degrees about y: the flipped one faces +z
    assert never_facing(torch.stack([TRI, turned]), faces, front_camera()).tolist() == [False, False]


def test_backface_dropout_rate():
    facing = torch.tensor([True, False])
    binding = torch.arange(20000) % 2
    bound = BoundGaussians.one_per_triangle(binding)
    keep = backface_dropout(bound, facing, generator=torch.Generator().manual_seed(0))
    assert keep[binding == 0].all()
    dropped = 1 - keep[binding == 1].float().mean().item()
    assert abs(dropped - 0.2) < 0.015
    again = backface_dropout(bound, facing, generator=torch.Generator().manual_seed(0))
    assert torch.equal(keep, again)
    assert backface_dropout(bound, facing, p=0.0, generator=torch.Generator()).all()
