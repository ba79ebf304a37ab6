"""Off-mesh Gaussians: DLT triangulation of synthetic projections of known points, the reprojection filter,
the epipolar constraint, binding to the nearest triangle off the surface, the visual hull of a ball's
silhouettes, and SIFT tracks on real renders."""

import pytest
import torch

from morph4d.avatar.gaussians import BoundGaussians
from morph4d.avatar.gaussians.offmesh import (
    OffMeshConfig,
    bind_points,
    fundamental,
    hull_points,
    reprojection_error,
    triangulate,
)
from morph4d.cameras import orbit_cameras


def _scene(n=50, views=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(n, 3, generator=g) - 0.5) * 0.3
    cams = orbit_cameras(torch.linspace(-60, 60, views), torch.linspace(-10, 15, views), 0.75, 26.0, 128, 128)
    pixels = cams.project(points)[..., :2].transpose(0, 1)  # (N, V, 2)
    return points, cams, pixels, g


def test_triangulation_recovers_known_points():
    points, cams, pixels, g = _scene()
    observed = torch.ones(pixels.shape[:2], dtype=torch.bool)
    observed[::2, :2] = False  # every other point seen in 4 views only
    X = triangulate(cams, observed, pixels)
    assert (X - points).norm(dim=-1).max() < 1e-4
    assert reprojection_error(cams, X, observed, pixels).max() < 1e-2
    noisy = pixels + 0.3 * torch.randn(pixels.shape, generator=g)
    Xn = triangulate(cams, observed, noisy)
    assert (Xn - points).norm(dim=-1).median() < 2e-3  # 0.3 px noise -> about a millimetre at 0.75 m


def test_a_bad_match_fails_the_reprojection_filter():
    points, cams, pixels, _ = _scene()
    observed = torch.ones(pixels.shape[:2], dtype=torch.bool)
    bad = pixels.clone()
    bad[0, 3] += torch.tensor([15.0, -9.0])  # one wrong match in view 3
    err = reprojection_error(cams, triangulate(cams, observed, bad), observed, bad)
    assert err[0] > 1.0 and err[1:].max() < 1e-2


def test_fundamental_matrix_of_the_known_cameras():
    points, cams, pixels, _ = _scene(views=3)
    h = torch.cat([pixels, torch.ones(*pixels.shape[:2], 1)], -1).double()  # (N, V, 3)
    F = fundamental(cams, 0, 2)
    line = h[:, 0] @ F.T
    dist = (h[:, 2] * line).sum(-1).abs() / line[:, :2].norm(dim=-1)
    assert dist.max() < 1e-3
    assert (((h[:, 1] * (h[:, 0] @ fundamental(cams, 0, 1).T)).sum(-1)).abs() < 1e-6).all()


def test_points_bind_to_their_nearest_triangle_off_the_surface():
    from morph4d.heads import HeadParams, load_head_model
    head = load_head_model("builtin")
    verts = head(HeadParams.zeros(head.num_shape, head.num_expression)).detach()
    centroid = verts[head.faces].mean(1)
    target = torch.tensor([10, 2000, 30000])
    points = centroid[target] + torch.tensor([[0.0, 0.0, 0.02]])  # 2 cm off the surface
    binding, local, dist = bind_points(points, verts, head.faces)
    assert torch.allclose(dist, (points - centroid[binding]).norm(dim=-1)) and (dist > 0).all()
    g = BoundGaussians.one_per_triangle(binding)
    g.local_means = local
    assert torch.allclose(g.to_world(verts, head.faces).means, points, atol=1e-6)  # the world point is kept
    assert (local.norm(dim=-1) > 1.0).all()  # farther than one triangle size: off the mesh


def test_visual_hull_shell_of_a_ball():
    """Silhouettes of a ball (radius 5 cm) seen from all round: the hull's shell hugs the ball (the hull
    contains the object, so no shell voxel lies inside it) and the shell is observed in the views."""
    radius, D, fov, size = 0.05, 0.75, 26.0, 64
    az, el = torch.meshgrid(torch.arange(0.0, 360.0, 30.0), torch.tensor([-60.0, 0.0, 60.0]), indexing="ij")
    cams = orbit_cameras(az.flatten(), el.flatten(), D, fov, size, size)
    f = float(cams.K[0, 0, 0])
    px = torch.arange(size) + 0.5
    d2 = (px[None, :] - size / 2) ** 2 + (px[:, None] - size / 2) ** 2
    # A centred ball's silhouette: a disc of radius f r / sqrt(D^2 - r^2) around the principal point.
    masks = (d2 < (f * radius / (D * D - radius * radius) ** 0.5) ** 2)[None].expand(len(cams), -1, -1)
    voxel = 0.004
    box = torch.tensor([[-0.06, -0.06, -0.06], [0.06, 0.06, 0.06]])  # "mesh" vertices: only their bounding box
    points, observed, pixels = hull_points(masks, cams, box, OffMeshConfig(hull_voxel=voxel, hull_voxel_pixels=None,
                                                                        hull_margin=0.02))
    dist = points.norm(dim=-1)
    assert len(points) > 500
    assert dist.min() > radius - 1.5 * voxel  # nothing inside the ball is carved: no shell deep inside it
    assert dist.median() < radius + 2 * voxel  # 36 views carve the hull close to the ball
    assert observed.shape == (len(points), len(cams)) and observed.float().mean() > 0.9
    assert torch.allclose(pixels, cams.project(points)[..., :2].transpose(0, 1))


def test_hull_voxel_counts_in_pixels_where_pixels_are_coarser():
    """The hull's voxel is cfg.hull_voxel metres, or hull_voxel_pixels pixels at the head if that is larger:
    4 mm at 128 px and above here (0.75 m, 26 deg), 1.2 pixels at 64 px."""
    from morph4d.avatar.gaussians.offmesh import hull_voxel, pixel_footprint
    box = torch.tensor([[-0.06, -0.06, -0.06], [0.06, 0.06, 0.06]])
    cfg = OffMeshConfig()
    sizes = {}
    for size in (64, 128, 512):
        cams = orbit_cameras(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.0]), 0.75, 26.0, size, size)
        foot = pixel_footprint(cams, box)
        assert foot == pytest.approx(0.75 / float(cams.K[0, 0, 0]), rel=1e-5)   # distance / focal length
        sizes[size] = hull_voxel(cfg, cams, box)
        assert sizes[size] == pytest.approx(max(cfg.hull_voxel, cfg.hull_voxel_pixels * foot))
    assert sizes[128] == sizes[512] == cfg.hull_voxel
    assert sizes[64] > 1.5 * cfg.hull_voxel
    assert hull_voxel(OffMeshConfig(hull_voxel_pixels=None), cams, box) == cfg.hull_voxel


def test_sift_tracks_on_rendered_views(tmp_path):
    pytest.importorskip("cv2")
    from morph4d.avatar.fit import load_fit_data
    from morph4d.avatar.gaussians.offmesh import OffMeshConfig, match_tracks
    from morph4d.data.synth import SynthConfig, synthesize
    names = synthesize(SynthConfig(out=str(tmp_path / "ds"), identities=1, views=12, frames=1, resolution=128,
                                   progress=False), log=lambda *_: None)
    data = load_fit_data(tmp_path / "ds" / names[0])
    observed, pixels = match_tracks(data.images[:, 0], data.cameras, OffMeshConfig(key_views=3))
    many = observed.sum(-1) >= 4
    assert many.sum() >= 3
    X = triangulate(data.cameras, observed[many], pixels[many])
    err = reprojection_error(data.cameras, X, observed[many], pixels[many])
    assert err.median() < 1.0  # the matches agree with the known cameras
