"""Gaussian splatting: triangle binding (GaussianAvatars frames, rigid + scale equivariance), the numba
fast path vs the torch reference twin (forward and gradients), gradchecks, hand-computed renders (blob,
occlusion, SH colour), input validation and the gsplat backend (CUDA only)."""

import math

import pytest
import torch

from morph4d.avatar.gaussians import (
    BoundGaussians,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    render_gaussians,
    rgb_to_sh,
    sh_basis,
    triangle_frames,
)
from morph4d.avatar.gaussians import rasterize as rz
from morph4d.avatar.gaussians._kernels import TILE, bin_gaussians, depth_order
from morph4d.avatar.gaussians.rasterize import SH_C0, SH_C1, SH_C2, SH_C3
from morph4d.cameras import Cameras, orbit_cameras


def random_rotation(g, dtype=torch.float64):
    return quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=dtype), dim=0))


def random_scene(G, g, sh_degree=2, dtype=torch.float32):
    """G Gaussians in a 0.25 m box around the origin: sizes 3-40 mm, opacities 0.05-1 (some exactly 1, so
    that the 0.99 clamp is active), SH of the given degree."""
    means = (torch.rand(G, 3, generator=g, dtype=dtype) - 0.5) * 0.25
    quats = torch.randn(G, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.empty(G, 3, dtype=dtype).uniform_(math.log(0.003), math.log(0.04), generator=g))
    opacities = torch.rand(G, generator=g, dtype=dtype) * 0.95 + 0.05
    opacities[::7] = 1.0
    sh = torch.randn(G, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.3
    return means, quats, scales, opacities, sh


def front_camera(width, height, distance=0.6, focal=60.0, centred_pixel=True, dtype=torch.float32):
    """One camera on +z looking at the origin (R = diag(1, -1, -1)); with ``centred_pixel`` the origin
    projects onto the centre of pixel (height // 2, width // 2)."""
    shift = 0.5 if centred_pixel else 0.0
    K = torch.tensor([[[focal, 0.0, width // 2 + shift], [0.0, focal, height // 2 + shift], [0.0, 0.0, 1.0]]],
                     dtype=dtype)
    return Cameras(torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))[None],
                   torch.tensor([[0.0, 0.0, distance]], dtype=dtype), K, width, height)


# ---------------------------------------------------------------------------------------------------
# Triangle binding
# ---------------------------------------------------------------------------------------------------

def test_triangle_frame_matches_gaussian_avatars():
    # Right triangle in the z = 0 plane: e0 = +x, n = +z, third axis e0 x n = -y (away from v2);
    # k = (|v1 - v0| + height of v2) / 2 = (2 + 1) / 2.
    vertices = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 1.0, 0.0]])
    R, k, centroid = triangle_frames(vertices, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(R[0], torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    assert k.item() == pytest.approx(1.5)
    torch.testing.assert_close(centroid[0], torch.tensor([2.5 / 3, 1.0 / 3, 0.0]))

    g = torch.Generator().manual_seed(0)
    vertices = torch.randn(30, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 30, (40, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    R, k, _ = triangle_frames(vertices, faces)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye)  # orthonormal
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(faces), dtype=torch.float64))  # right-handed
    v0, v1, v2 = vertices[faces].unbind(1)
    normal = torch.linalg.cross(v1 - v0, v2 - v0)
    assert torch.all((R[..., 1] * normal).sum(-1) > 0)  # second column: the counter-clockwise normal
    assert torch.all((R[..., 2] * (v2 - v0)).sum(-1) < 0)  # third column points away from v2
    height = normal.norm(dim=-1) / (v1 - v0).norm(dim=-1)
    torch.testing.assert_close(k, ((v1 - v0).norm(dim=-1) + height) / 2)


def test_quaternion_helpers():
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(64, 4, generator=g, dtype=torch.float64), dim=-1)
    q = torch.cat([q, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])  # 180 deg
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    torch.testing.assert_close(back, q * torch.where(q[:, :1] < 0, -1.0, 1.0))  # same rotation, w >= 0
    a, b = q[:32], q[32:64]
    torch.testing.assert_close(quaternion_to_matrix(quaternion_multiply(a, b)),
                               quaternion_to_matrix(a) @ quaternion_to_matrix(b))


def test_init_puts_one_gaussian_on_each_centroid():
    g = torch.Generator().manual_seed(2)
    vertices = torch.randn(12, 3, generator=g)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    bound = BoundGaussians.one_per_triangle(torch.tensor([2, 0, 3]), sh_degree=1, color=(0.2, 0.4, 0.6))
    world = bound.to_world(vertices, faces)
    R, k, centroid = triangle_frames(vertices, faces)
    torch.testing.assert_close(world.means, centroid[[2, 0, 3]])  # mu = 0 sits on the centroid
    torch.testing.assert_close(world.scales, k[[2, 0, 3], None].expand(3, 3))  # s = 0: scale k
    torch.testing.assert_close(quaternion_to_matrix(world.quats), R[[2, 0, 3]], atol=1e-6, rtol=0)
    torch.testing.assert_close(world.opacities, torch.full((3,), 0.1))
    assert world.sh.shape == (3, 4, 3) and torch.all(world.sh[:, 1:] == 0)
    torch.testing.assert_close(world.sh[:, 0] * SH_C0 + 0.5, torch.tensor([[0.2, 0.4, 0.6]]).expand(3, 3))
    state = bound.state_dict()
    assert set(state) == {"local_means", "log_scales", "quats", "opacity_logits", "sh", "binding"}
    assert torch.equal(BoundGaussians.from_state_dict(state).binding, bound.binding)


def test_bound_gaussian_follows_its_triangle_exactly():
    """Rigid motion + uniform scaling of the mesh moves, turns and scales every bound Gaussian the same way."""
    g = torch.Generator().manual_seed(3)
    vertices = torch.randn(20, 3, generator=g, dtype=torch.float64)
    faces = torch.stack([torch.arange(0, 18, 3), torch.arange(1, 19, 3), torch.arange(2, 20, 3)], dim=1)
    G = 10
    bound = BoundGaussians(local_means=torch.randn(G, 3, generator=g, dtype=torch.float64),
                           log_scales=torch.randn(G, 3, generator=g, dtype=torch.float64) * 0.3,
                           quats=torch.randn(G, 4, generator=g, dtype=torch.float64),
                           opacity_logits=torch.randn(G, generator=g, dtype=torch.float64),
                           sh=torch.randn(G, 9, 3, generator=g, dtype=torch.float64),
                           binding=torch.randint(0, len(faces), (G,), generator=g))
    Q, s, shift = random_rotation(g), 1.7, torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    before = bound.to_world(vertices, faces)
    after = bound.to_world(s * vertices @ Q.T + shift, faces)
    torch.testing.assert_close(after.means, s * before.means @ Q.T + shift)
    torch.testing.assert_close(after.scales, s * before.scales)
    torch.testing.assert_close(quaternion_to_matrix(after.quats), Q @ quaternion_to_matrix(before.quats))
    torch.testing.assert_close(after.opacities, before.opacities)
    # World mean = k R mu + centroid, written out for one Gaussian.
    R, k, centroid = triangle_frames(vertices, faces)
    t = bound.binding[0]
    torch.testing.assert_close(before.means[0], k[t] * R[t] @ bound.local_means[0] + centroid[t])


# ---------------------------------------------------------------------------------------------------
# Rasterizer: fast path vs twin
# ---------------------------------------------------------------------------------------------------

def render_and_grad(scene, cameras, backend, weights, **kwargs):
    leaves = [x.clone().requires_grad_() for x in scene]
    r = render_gaussians(*leaves, cameras, backend=backend, **kwargs)
    loss = (r.image * weights[0]).sum() + (r.alpha * weights[1]).sum() + (r.depth * weights[2]).sum()
    loss.backward()
    return r, [x.grad for x in leaves]


@pytest.mark.parametrize("sh_degree", [None, 0, 3])
def test_fast_path_matches_twin_forward_and_backward(sh_degree):
    g = torch.Generator().manual_seed(4)
    means, quats, scales, opacities, sh = random_scene(160, g, sh_degree=3 if sh_degree is not None else 0)
    # Culled on purpose: one Gaussian behind camera 0, one far off-screen.
    means[0] = torch.tensor([0.0, 0.0, 1.0])
    means[1] = torch.tensor([5.0, 0.0, 0.0])
    colors = torch.rand(160, 3, generator=g) if sh_degree is None else sh
    cameras = orbit_cameras(torch.tensor([0.0, 50.0]), torch.tensor([0.0, -20.0]), 0.6, 30.0, 32, 24)
    H, W = 24, 32
    weights = [torch.randn(2, H, W, 3, generator=g), torch.randn(2, H, W, generator=g),
               torch.randn(2, H, W, generator=g)]
    scene = (means, quats, scales, opacities, colors)
    fast, fast_grads = render_and_grad(scene, cameras, "numba", weights, sh_degree=sh_degree)
    twin, twin_grads = render_and_grad(scene, cameras, "torch", weights, sh_degree=sh_degree)

    assert fast.image.shape == (2, H, W, 3) and fast.alpha.shape == fast.depth.shape == (2, H, W)
    assert fast.radii.shape == (2, 160) and fast.radii.dtype == torch.int32
    assert torch.equal(fast.radii, twin.radii) and torch.equal(fast.visible, fast.radii > 0)
    assert not fast.visible[0, 0] and not fast.visible[:, 1].any() and fast.visible.float().mean() > 0.9
    # A real scene: empty and covered pixels, pixels stopped by T < 1e-4 (alpha just below 1 - 1e-4).
    assert (fast.alpha < 1e-3).any() and fast.alpha.max() > 0.999 and fast.alpha.max() <= 1 - 1e-4 + 1e-6
    for name in ("image", "alpha", "depth"):
        torch.testing.assert_close(getattr(fast, name), getattr(twin, name), atol=1e-5, rtol=1e-5)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors"], fast_grads, twin_grads):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=name)


def test_batch_equals_single_camera_and_auto_is_numba_on_cpu():
    g = torch.Generator().manual_seed(5)
    scene = random_scene(80, g)
    cameras = orbit_cameras(torch.tensor([-30.0, 30.0, 180.0]), torch.tensor([0.0, 10.0, 0.0]), 0.5, 40.0, 40, 36)
    batch = render_gaussians(*scene, cameras, background=(0.2, 0.3, 0.4))
    fast = render_gaussians(*scene, cameras, background=(0.2, 0.3, 0.4), backend="numba")
    assert torch.equal(batch.image, fast.image)
    for b in range(3):
        single = render_gaussians(*scene, cameras[b], background=(0.2, 0.3, 0.4))
        torch.testing.assert_close(single.image[0], batch.image[b], atol=1e-6, rtol=0)
        assert torch.equal(single.radii[0], batch.radii[b])


def test_twin_gradcheck_float64():
    g = torch.Generator().manual_seed(6)
    means, quats, scales, opacities, sh = random_scene(5, g, sh_degree=1, dtype=torch.float64)
    scales = scales.clamp(min=0.01)
    opacities = opacities.clamp(0.2, 0.9)  # away from the 0.99 clamp
    cameras = orbit_cameras(torch.tensor([0.0, 60.0]), torch.tensor([0.0, 10.0]), 0.6, 30.0, 20, 12,
                            dtype=torch.float64)

    def render(*x):
        r = render_gaussians(*x, cameras, background=(0.3, 0.6, 0.9), backend="torch")
        return r.image, r.alpha, r.depth

    inputs = [x.clone().requires_grad_() for x in (means, quats, scales, opacities, sh)]
    assert torch.autograd.gradcheck(render, inputs, fast_mode=True)


def test_compositing_function_gradcheck_float64():
    """The numba backward against finite differences of the numba forward, on fixed tile lists."""
    g = torch.Generator().manual_seed(7)
    means, quats, scales, opacities, _ = random_scene(12, g, dtype=torch.float64)
    opacities = opacities.clamp(0.2, 0.9)
    colors = torch.rand(12, 3, generator=g, dtype=torch.float64)
    H, W = 20, 36
    cameras = orbit_cameras(torch.tensor([0.0, 40.0]), torch.tensor([0.0, 0.0]), 0.6, 30.0, W, H, dtype=torch.float64)
    p = rz._project(means, quats, scales, opacities, colors, cameras, None, rz.NEAR)
    order = depth_order(p.params[rz.DEPTH].contiguous().numpy())
    offsets, entries = bin_gaussians(p.rects.numpy(), order, -(-W // TILE), -(-H // TILE))
    params = p.params.detach().clone().requires_grad_()
    features, T = rz._CompositeNumba.apply(params, offsets, entries, H, W)
    assert (T < 0.9).any() and len(entries) > 12  # Gaussians overlap and span several tiles
    assert torch.autograd.gradcheck(lambda x: rz._CompositeNumba.apply(x, offsets, entries, H, W), (params,),
                                    fast_mode=True)


# ---------------------------------------------------------------------------------------------------
# Hand-computed renders
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_isotropic_gaussian_renders_the_expected_blob(backend):
    W = H = 33
    s, o, z, f = 0.01, 0.7, 0.6, 60.0
    cameras = front_camera(W, H, distance=z, focal=f)
    color = torch.tensor([[0.9, 0.2, 0.1]])
    r = render_gaussians(torch.zeros(1, 3), torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), s),
                         torch.tensor([o]), color, cameras, background=(0.0, 0.0, 1.0), backend=backend)
    # Head-on, J = diag(f / z): the 2D Gaussian is isotropic with variance (f s / z)^2 + 0.3 (dilation).
    var = (f * s / z) ** 2 + 0.3
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    d2 = ((i - H // 2) ** 2 + (j - W // 2) ** 2).float()
    expected = o * torch.exp(-0.5 * d2 / var)
    expected = torch.where(expected >= 1 / 255, expected, 0.0)  # the 3DGS alpha threshold
    radius = math.ceil(3 * math.sqrt(var))
    assert r.radii.item() == radius
    torch.testing.assert_close(r.alpha[0], expected, atol=1e-6, rtol=1e-5)
    assert r.alpha[0, H // 2, W // 2].item() == pytest.approx(o, rel=1e-6)  # peak alpha = opacity
    a = r.alpha[0]
    for mirrored in (a.flip(0), a.flip(1), a.T):  # radially symmetric about the centre pixel
        torch.testing.assert_close(mirrored, a, atol=1e-7, rtol=0)
    torch.testing.assert_close(r.image[0], a[..., None] * color + (1 - a[..., None]) * torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(r.depth[0][a > 0], torch.full_like(a[a > 0], z))
    assert torch.all(r.depth[0][a == 0] == 0)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_nearer_opaque_gaussian_hides_the_farther_one(backend):
    cameras = front_camera(17, 17)
    red, blue, bg = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])
    quats, scales = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(2, 1), torch.full((2, 3), 0.02)
    opacities = torch.full((2,), 0.95)
    for z_red, z_blue in [(0.1, -0.1), (-0.1, 0.1)]:  # world z: larger is nearer to the camera at z = 0.6
        for order in ([0, 1], [1, 0]):  # the index order of the Gaussians must not matter
            means = torch.tensor([[0.0, 0.0, z_red], [0.0, 0.0, z_blue]])[order]
            colors = torch.stack([red, blue])[order]
            r = render_gaussians(means, quats, scales, opacities, colors, cameras, backend=backend)
            near, far = (red, blue) if z_red > z_blue else (blue, red)
            centre = r.image[0, 8, 8]
            # Front to back: the near one takes 0.95, the far one 0.95 of the remaining 0.05.
            torch.testing.assert_close(centre, 0.95 * near + 0.05 * 0.95 * far + 0.05 * 0.05 * bg)
            z_near, z_far = 0.6 - max(z_red, z_blue), 0.6 - min(z_red, z_blue)
            assert r.depth[0, 8, 8].item() == pytest.approx((0.95 * z_near + 0.0475 * z_far) / 0.9975, rel=1e-5)


def test_sh_basis_values_and_degree_zero_colour_is_view_independent():
    z_axis = torch.tensor([[0.0, 0.0, 1.0]])
    expected = torch.zeros(16)
    expected[0], expected[2], expected[6], expected[12] = SH_C0, SH_C1, 2 * SH_C2[2], 2 * SH_C3[3]
    torch.testing.assert_close(sh_basis(z_axis, 3)[0], expected)
    x_axis = torch.tensor([[1.0, 0.0, 0.0]])
    assert sh_basis(x_axis, 1)[0].tolist() == pytest.approx([SH_C0, 0.0, 0.0, -SH_C1])

    g = torch.Generator().manual_seed(8)
    dc = torch.tensor([[0.3, -0.2, 0.6]])
    colour = SH_C0 * dc[0] + 0.5
    cameras = orbit_cameras(torch.tensor([0.0, 70.0, 160.0]), torch.tensor([0.0, 30.0, -10.0]), 0.5, 30.0, 15, 15)
    args = (torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), 0.05), torch.ones(1))
    r = render_gaussians(*args, dc[:, None], cameras)  # K = 1: degree 0
    a = r.alpha[:, 7, 7, None]
    torch.testing.assert_close(r.image[:, 7, 7], a * colour + (1 - a), atol=1e-6, rtol=0)
    higher = torch.cat([dc[:, None], torch.randn(1, 15, 3, generator=g)], dim=1)
    torch.testing.assert_close(render_gaussians(*args, higher, cameras, sh_degree=0).image, r.image)
    assert not torch.allclose(render_gaussians(*args, higher, cameras).image, r.image)  # degree 3 is not
    torch.testing.assert_close(rgb_to_sh(colour), dc[0])


def test_bound_gaussians_render_with_gradients_to_raw_parameters():
    g = torch.Generator().manual_seed(9)
    vertices = (torch.rand(150, 3, generator=g) - 0.5) * 0.2
    faces = torch.arange(150).reshape(50, 3)
    bound = BoundGaussians.one_per_triangle(50, sh_degree=1, opacity=0.5)
    raw = {k: v.requires_grad_() for k, v in bound.state_dict().items() if v.dtype.is_floating_point}
    world = BoundGaussians(**{**bound.state_dict(), **raw}).to_world(vertices, faces)
    cameras = orbit_cameras(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.0]), 0.5, 35.0, 24, 24)
    r = render_gaussians(world.means, world.quats, world.scales, world.opacities, world.sh, cameras)
    ((r.image - 0.3) ** 2).mean().backward()
    for name, x in raw.items():
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------
# Validation and gsplat
# ---------------------------------------------------------------------------------------------------

CAMERA = front_camera(8, 8)
M, Q, S = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.01)  # two valid Gaussians
O, C = torch.ones(2), torch.ones(2, 3)


@pytest.mark.parametrize("call, message", [
    (lambda: render_gaussians(M[0], Q, S, O, C, CAMERA), r"means must be a floating-point tensor of shape \(G, 3\)"),
    (lambda: render_gaussians(M, Q[:, :3], S, O, C, CAMERA), r"quats must .* shape \(G, 4\) with G = 2"),
    (lambda: render_gaussians(M, Q, S.double(), O, C, CAMERA), r"scales must .* dtype torch.float32"),
    (lambda: render_gaussians(M, Q, S, O[:, None], C, CAMERA), r"opacities must .* shape \(G,\)"),
    (lambda: render_gaussians(M, Q, S, O, C[:, :2], CAMERA), r"colors must .* \(G, 3\) RGB or \(G, K, 3\) SH"),
    (lambda: render_gaussians(M, Q, S, O, torch.ones(2, 5, 3), CAMERA), r"K = 1, 4, 9 or 16"),
    (lambda: render_gaussians(M, Q, S, O, torch.ones(2, 4, 3), CAMERA, sh_degree=2), r"sh_degree must be in \[0, 1\]"),
    (lambda: render_gaussians(M, Q, S, O, C, CAMERA, sh_degree=1), r"needs SH colors"),
    (lambda: render_gaussians(M, Q, S, O, C, CAMERA, background=(1, 1)), r"background must be 3 values"),
    (lambda: render_gaussians(M, Q, S, O, C, CAMERA, backend="cuda"), r"backend must be one of"),
    (lambda: render_gaussians(M, Q, S, O, C, "camera"), r"cameras must be a morph4d.cameras.Cameras"),
    (lambda: BoundGaussians.one_per_triangle(3).to_world(torch.zeros(5, 3), torch.tensor([[0, 1, 2]])),
     r"binding indexes triangle 2 but faces has 1"),
    (lambda: BoundGaussians.one_per_triangle(3).to_world(torch.zeros(2, 5, 3), torch.tensor([[0, 1, 2]])),
     r"vertices must be a \(N, 3\) tensor"),
    (lambda: BoundGaussians(M, S, Q[:, :3], O, torch.ones(2, 1, 3), torch.arange(2)), r"quats must .* \(2, 4\)"),
    (lambda: BoundGaussians(M, S, Q, O, torch.ones(2, 3), torch.arange(2)), r"sh must have shape \(G=2, K, 3\)"),
])
def test_bad_input_raises_helpful_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_gsplat_backend_matches_ours_on_cuda():
    pytest.importorskip("gsplat")
    if not torch.cuda.is_available():
        pytest.skip("the gsplat backend needs CUDA")
    g = torch.Generator().manual_seed(10)
    means, quats, scales, opacities, sh = random_scene(200, g, sh_degree=3)
    opacities = opacities.clamp(max=0.9)  # gsplat clamps alpha at 0.999, ours (3DGS) at 0.99
    cameras = orbit_cameras(torch.tensor([0.0, 45.0]), torch.tensor([0.0, 10.0]), 0.6, 30.0, 64, 48)
    ours = render_gaussians(means, quats, scales, opacities, sh, cameras, backend="numba")
    cuda = [x.to("cuda") for x in (means, quats, scales, opacities, sh)]
    theirs = render_gaussians(*cuda, cameras.to("cuda"), backend="auto")
    assert theirs.image.is_cuda
    # Same model; gsplat's tile test and radius differ slightly from 3DGS's at the 3-sigma edge.
    assert (theirs.image.cpu() - ours.image).abs().mean() < 1e-2
    assert (theirs.alpha.cpu() - ours.alpha).abs().mean() < 1e-2


def test_standard_ply_round_trip_and_header(tmp_path):
    """One frame of bound Gaussians written as a standard 3DGS .ply reads back to the same Gaussians."""
    from morph4d.avatar.gaussians import BoundGaussians
    from morph4d.avatar.gaussians.export import read_ply, write_ply
    from morph4d.heads.builtin import load_builtin_head
    head = load_builtin_head()
    bound = BoundGaussians.one_per_triangle(head.faces.shape[0], sh_degree=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound.sh.add_(0.1 * torch.randn(bound.sh.shape, generator=g))
    world = bound.to_world(head.template, head.faces)
    write_ply(tmp_path / "frame.ply", world)
    text = (tmp_path / "frame.ply").read_bytes()[:2000].decode("ascii", "ignore")
    assert f"element vertex {head.faces.shape[0]}" in text and "property float f_rest_44" in text
    back = read_ply(tmp_path / "frame.ply")
    torch.testing.assert_close(back.means, world.means.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(back.scales, world.scales.detach(), atol=1e-9, rtol=1e-5)
    torch.testing.assert_close(back.opacities, world.opacities.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.sh, world.sh.detach(), atol=1e-6, rtol=1e-6)
    q = torch.nn.functional.normalize(world.quats.detach(), dim=-1)
    torch.testing.assert_close(back.quats, q, atol=1e-6, rtol=1e-6)
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a .ply"):
        read_ply(tmp_path / "bad.ply")
