"""The MPI renderer of IM-Portrait (morph4d.portrait.mpi): plane placement, homographies against direct
projection, depth, the frontal/residual colours, gradients, and the numba fast path against the torch reference."""

import math

import pytest
import torch

from morph4d.cameras import look_at
from morph4d.portrait.mpi import (
    FAR_OFFSET,
    MPI,
    NEAR_OFFSET,
    head_distance,
    homographies,
    orbit_about,
    plane_colors,
    plane_depths,
    render_mpi,
    stereo_cameras,
    with_background,
)

HEAD = torch.tensor([0.0, 0.02, 0.0], dtype=torch.float64)


def frontal(size: int = 48):
    from morph4d.cameras import Cameras
    R, t = look_at(torch.tensor([[0.0, 0.02, 0.75]], dtype=torch.float64), HEAD[None])
    f = size / (2 * math.tan(math.radians(13)))
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]], dtype=torch.float64)
    return Cameras(R.reshape(1, 3, 3), t.reshape(1, 3), K, size, size)


def random_mpi(cam, planes: int = 6, seed: int = 0, dtype=torch.float64) -> MPI:
    g = torch.Generator().manual_seed(seed)
    H, W = cam.height, cam.width
    color = torch.rand(planes, 3, H, W, generator=g, dtype=dtype)
    alpha = torch.rand(planes, 1, H, W, generator=g, dtype=dtype) ** 3
    return MPI(color, alpha, plane_depths(head_distance(cam, HEAD), planes).to(dtype), cam)


def test_planes_span_the_supplements_range_uniformly_in_disparity():
    d = plane_depths(0.75, 8)
    assert d[0] == pytest.approx(0.75 + NEAR_OFFSET) and d[-1] == pytest.approx(0.75 + FAR_OFFSET)
    disparity = 1 / d
    assert torch.allclose(disparity[1:] - disparity[:-1], (disparity[1] - disparity[0]).expand(7), atol=1e-12)
    assert head_distance(frontal(), HEAD) == pytest.approx(0.75, abs=1e-9)
    with pytest.raises(ValueError, match="near plane"):
        plane_depths(0.1, 8)


def test_homographies_map_target_pixels_to_the_frontal_pixels_of_the_same_plane_point():
    cam = frontal()
    mpi = random_mpi(cam)
    side = orbit_about(cam, HEAD, 5.0, -3.0)
    Hinv, n_dst, d_dst = homographies(mpi, side)
    g = torch.Generator().manual_seed(1)
    for p in (0, 3, 5):
        # points on plane p (depth d in the frontal camera), in world coordinates
        uv = torch.rand(20, 2, generator=g, dtype=torch.float64) * 48
        ray = torch.cat([uv, torch.ones(20, 1, dtype=torch.float64)], 1) @ torch.linalg.inv(cam.K[0]).T
        X_cam = ray * mpi.depths[p]
        X = (X_cam - cam.t[0]) @ cam.R[0]                                   # world
        uv_side = side.project(X)[0, :, :2]
        mapped = torch.cat([uv_side, torch.ones(20, 1, dtype=torch.float64)], 1) @ Hinv[0, p].T
        assert torch.allclose(mapped[:, :2] / mapped[:, 2:], uv, atol=1e-7)
        # the plane's depth along the target ray is the point's depth in the target camera
        z_side = (X @ side.R[0].T + side.t[0])[:, 2]
        ray_side = torch.cat([uv_side, torch.ones(20, 1, dtype=torch.float64)], 1) @ torch.linalg.inv(side.K[0]).T
        assert torch.allclose(d_dst[0, p] / (ray_side @ n_dst[0]), z_side, atol=1e-9)


def test_the_frontal_render_composites_the_planes_and_an_opaque_plane_gives_its_depth():
    cam = frontal()
    mpi = random_mpi(cam)
    out = render_mpi(mpi, cam, background=0.0, fast=False)
    T = torch.cumprod(torch.cat([torch.ones_like(mpi.alpha[:1]), 1 - mpi.alpha[:-1]]), 0)
    expected = (mpi.alpha * T * mpi.color).sum(0)
    assert torch.allclose(out.rgb[0], expected, atol=1e-9)
    # one opaque plane at depth d: the frontal camera sees depth d everywhere; a side camera sees the tilted plane
    alpha = torch.zeros_like(mpi.alpha)
    alpha[2] = 1
    flat = MPI(mpi.color, alpha, mpi.depths, cam)
    assert torch.allclose(render_mpi(flat, cam, fast=False).depth, mpi.depths[2].expand(1, 1, 48, 48), atol=1e-9)
    side = render_mpi(flat, orbit_about(cam, HEAD, 5.0), fast=False)
    inside = side.alpha[0, 0] > 0.999
    assert inside.float().mean() > 0.8 and side.depth[0, 0][inside].std() > 1e-4


def test_frontal_and_residual_colours_frontal_view_shows_the_frontal_image():
    cam = frontal(16)
    g = torch.Generator().manual_seed(2)
    front, residual = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    alpha = torch.rand(5, 1, 16, 16, generator=g)
    alpha[1] = 1                                       # an opaque plane: nothing behind it shows frontally
    colors = plane_colors(front, residual, alpha)
    assert torch.allclose(colors[0], front.expand(3, 16, 16))          # nothing in front of the nearest plane
    assert torch.allclose(colors[2:], residual.expand(3, 3, 16, 16))   # hidden behind the opaque plane
    # a surface the frontal camera meets fully opaque (nothing translucent before it) is shown in the frontal image
    surface = torch.zeros_like(alpha)
    surface[torch.randint(0, 5, (16, 16), generator=g), 0, torch.arange(16)[:, None], torch.arange(16)] = 1
    mpi = MPI(plane_colors(front, residual, surface).double(), surface.double(), plane_depths(0.75, 5), cam)
    assert torch.allclose(render_mpi(mpi, cam, fast=False).rgb[0].float(), front, atol=1e-6)


def test_gradients_reach_colour_and_alpha():
    cam = frontal(12)
    mpi = random_mpi(cam, planes=3)
    color = mpi.color.clone().requires_grad_()
    alpha = mpi.alpha.clone().clamp(0.05, 0.95).requires_grad_()
    side = orbit_about(cam, HEAD, -5.0)
    torch.autograd.gradcheck(lambda c, a: render_mpi(MPI(c, a, mpi.depths, cam), side).rgb,
                             (color, alpha), atol=1e-6, eps=1e-6)


def test_fast_path_matches_the_torch_reference_on_side_views_and_stereo():
    cam = frontal(40)
    mpi = random_mpi(cam, planes=8, dtype=torch.float32)
    cams = [cam, orbit_about(cam, HEAD, 5.0), orbit_about(cam, HEAD, -5.0, 2.0), stereo_cameras(cam)]
    for c in cams:
        ref = render_mpi(mpi, c, fast=False)
        fast = render_mpi(mpi, c, fast=True)
        for name in ("rgb", "alpha", "depth", "disparity"):
            a, b = getattr(ref, name), getattr(fast, name)
            assert a.shape == b.shape and (a - b).abs().max() < 2e-4, (name, (a - b).abs().max())
    # a grad-free call picks the fast path itself
    assert torch.equal(render_mpi(mpi, cam).rgb, render_mpi(mpi, cam, fast=True).rgb)


def test_side_and_stereo_cameras_keep_the_head_in_view():
    cam = frontal()
    c_head = cam.R[0] @ HEAD + cam.t[0]
    for yaw, pitch in ((5.0, 0.0), (-5.0, 0.0), (0.0, 5.0)):
        side = orbit_about(cam, HEAD, yaw, pitch)
        assert torch.allclose(side.R[0] @ HEAD + side.t[0], c_head, atol=1e-12)     # same view of the head
        C0, C1 = cam.centers[0] - HEAD, side.centers[0] - HEAD
        angle = math.degrees(math.acos(float(C0 @ C1 / (C0.norm() * C1.norm()))))
        assert angle == pytest.approx(abs(yaw) + abs(pitch), abs=1e-9)
    right = orbit_about(cam, HEAD, 5.0)
    assert float((cam.R[0] @ right.centers[0] + cam.t[0])[0]) > 0               # +yaw moves to the camera's right
    pair = stereo_cameras(cam, 0.064)
    assert torch.allclose((pair.centers[1] - pair.centers[0]).norm(), torch.tensor(0.064, dtype=torch.float64))
    assert float((cam.R[0] @ pair.centers[0] + cam.t[0])[0]) < 0                 # the left eye first


def test_depth_lifting_matches_the_mpi_on_a_single_plane():
    """The 2D + depth baseline (portrait.lift): for one opaque plane, lifting the frontal render by its depth and
    re-rendering it from a side camera gives the MPI's own side render (both exact for a plane)."""
    from morph4d.portrait.lift import lift_depth
    cam = frontal(48)
    mpi = random_mpi(cam, dtype=torch.float32)
    smooth = torch.nn.functional.avg_pool2d(mpi.color, 9, stride=1, padding=4, count_include_pad=False)
    alpha = torch.zeros_like(mpi.alpha)
    alpha[3] = 1
    flat = MPI(smooth, alpha, mpi.depths, cam)
    front = render_mpi(flat, cam, fast=False)
    side = orbit_about(cam, HEAD, 5.0)
    lifted = lift_depth(front.rgb[0], front.depth[0], front.alpha[0], cam, side)
    expected = render_mpi(flat, side, fast=False).rgb
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (lifted[inner] - expected[inner]).abs().mean() < 0.01


@pytest.mark.parametrize("fast", [False, True])
def test_the_background_plane_shows_where_the_head_is_transparent_and_the_head_moves_over_it(fast):
    cam = frontal(40)
    g = torch.Generator().manual_seed(3)
    plate = torch.rand(3, 40, 40, generator=g, dtype=torch.float64)
    empty = random_mpi(cam, planes=4)
    empty = MPI(empty.color, torch.zeros_like(empty.alpha), empty.depths, cam)
    assert torch.allclose(render_mpi(with_background(empty, plate), cam, fast=fast).rgb[0], plate, atol=1e-5)
    # an opaque square on the near plane hides the plate; in a side view the wall behind shifts less than it
    head = random_mpi(cam, planes=4)
    alpha = torch.zeros_like(head.alpha)
    alpha[0, :, 15:25, 15:25] = 1
    head = MPI(head.color, alpha, head.depths, cam)
    front = render_mpi(with_background(head, plate), cam, fast=fast)
    assert torch.allclose(front.rgb[0, :, 0:10, 0:10], plate[:, 0:10, 0:10], atol=1e-5)
    side_cam = orbit_about(cam, HEAD, 5.0)
    side = render_mpi(with_background(head, plate), side_cam, fast=fast).rgb[0]
    wall = render_mpi(with_background(empty, plate), side_cam, fast=fast).rgb[0]
    cover = render_mpi(head, side_cam, fast=fast).alpha[0, 0]
    square = cover > 0.5
    assert torch.allclose(side[:, cover < 1e-6], wall[:, cover < 1e-6], atol=1e-5)  # the wall where the head is not
    cols = lambda a: a.nonzero()[:, 1].float().mean()                               # noqa: E731
    front_square = render_mpi(head, cam, fast=fast).alpha[0, 0] > 0.5
    assert abs(cols(square) - cols(front_square)) > 1.0                          # the head moves in a side view
    with pytest.raises(Exception, match="background plate"):
        with_background(head, plate[:, :20])
