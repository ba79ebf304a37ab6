"""Camera conventions, view sets and head crops (morph4d/cameras.py)."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from morph4d.cameras import (
    Cameras,
    angular_distance,
    from_opengl,
    head_crop_boxes,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    outcrop_mask,
    to_opengl,
    view_directions,
    view_set,
)


def identity_camera(fx=100.0, fy=100.0, cx=32.0, cy=24.0, width=64, height=48) -> Cameras:
    K = torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]])
    return Cameras(torch.eye(3)[None], torch.zeros(1, 3), K, width, height)


def random_cameras(n=5, seed=0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    azimuth = torch.rand(n, generator=g) * 360 - 180
    elevation = torch.rand(n, generator=g) * 120 - 30
    radius = 1 + torch.rand(n, generator=g)
    return orbit_cameras(azimuth, elevation, radius, 30.0, 64, 48, target=(0.01, 0.02, -0.03))


def random_points(b, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g) * 0.1


# ---- projection conventions -------------------------------------------------------------------------


def test_known_point_projects_to_known_pixel():
    # u = 100 * 0.1 / 2 + 32 = 37, v = 100 * -0.2 / 2 + 24 = 14, z = 2 (hand computed)
    uvz = identity_camera().project(torch.tensor([[0.1, -0.2, 2.0]]))
    torch.testing.assert_close(uvz, torch.tensor([[[37.0, 14.0, 2.0]]]))


def test_intrinsics_from_fov_is_centred_and_vertical():
    K = intrinsics_from_fov(60.0, 64, 48)
    f = 24 / math.tan(math.radians(30))
    torch.testing.assert_close(K, torch.tensor([[f, 0, 32.0], [0, f, 24.0], [0, 0, 1.0]]))
    # a point 30 degrees above the optical axis lands on the top image border (v = 0)
    cam = Cameras(torch.eye(3)[None], torch.zeros(1, 3), K[None], 64, 48)
    up30 = torch.tensor([[0.0, -math.sin(math.radians(30)), math.cos(math.radians(30))]])
    assert cam.project(up30)[0, 0, 1].abs() < 1e-4


def test_look_at_target_on_principal_point_and_world_up_is_image_up():
    g = torch.Generator().manual_seed(0)
    eye = torch.randn(6, 3, generator=g) * 2
    target = torch.randn(6, 3, generator=g) * 0.1
    R, t = look_at(eye, target)
    K = intrinsics_from_fov(40.0, 64, 48).expand(6, 3, 3)
    cams = Cameras(R, t, K, 64, 48)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(6, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(6))
    uvz = cams.project(target[:, None])
    torch.testing.assert_close(uvz[:, 0, :2], torch.tensor([32.0, 24.0]).expand(6, 2), atol=1e-4, rtol=0)
    above = cams.project((target + torch.tensor([0.0, 0.05, 0.0]))[:, None])
    assert (above[:, 0, 1] < uvz[:, 0, 1]).all()
    torch.testing.assert_close(cams.centers, eye, atol=1e-5, rtol=0)


def test_look_at_straight_down_and_up_has_a_defined_roll():
    eye = torch.tensor([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]])
    R, t = look_at(eye, torch.zeros(2, 3))
    assert torch.isfinite(R).all()
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(2, 3, 3))
    # from above: image up (-y_cam) is the back of the head (-z), the limit of an azimuth-0 orbit
    torch.testing.assert_close(-R[0, 1], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(-R[1, 1], torch.tensor([0.0, 0.0, 1.0]))
    near_pole = orbit_cameras(torch.tensor([0.0, 0.0]), torch.tensor([89.999, -89.999]), 2.0, 30.0, 8, 8)
    torch.testing.assert_close(near_pole.R, R, atol=1e-4, rtol=0)


def test_orbit_camera_positions_follow_the_angle_conventions():
    cams = orbit_cameras(torch.tensor([0.0, 90.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 30.0, 90.0]),
                         2.0, 30.0, 64, 48)
    c = cams.centers
    torch.testing.assert_close(c[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6, rtol=0)  # in front, on +z
    torch.testing.assert_close(c[1], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6, rtol=0)  # towards +x
    assert abs(c[2, 1].item() - 1.0) < 1e-6  # elevation 30: above, y = 2 sin 30
    torch.testing.assert_close(c[3], torch.tensor([0.0, 2.0, 0.0]), atol=1e-6, rtol=0)  # the pole
    # every camera looks at the origin: z_cam axis (third row of R) points from the centre to it
    torch.testing.assert_close(cams.R[:, 2], -c / 2, atol=1e-6, rtol=0)
    # frontal camera: the subject's left (+x) is on the image right, the top of the head (+y) up
    uvz = cams[0].project(torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]))[0]
    assert uvz[0, 0] > 32 and uvz[1, 1] < 24
    # from the pole at azimuth 0 the face (+z) is at the image bottom
    assert cams[3].project(torch.tensor([[0.0, 0.0, 0.1]]))[0, 0, 1] > 24


# ---- round trips ------------------------------------------------------------------------------------


def test_project_unproject_round_trip():
    cams = random_cameras()
    points = random_points(len(cams), 20)
    uvz = cams.project(points)
    torch.testing.assert_close(cams.unproject(uvz[..., :2], uvz[..., 2]), points, atol=1e-5, rtol=0)


def test_shared_points_and_centers_map_to_the_camera_origin():
    cams = random_cameras()
    torch.testing.assert_close(cams.world_to_camera(cams.centers[:, None]), torch.zeros(len(cams), 1, 3),
                               atol=1e-5, rtol=0)
    shared = random_points(1, 7)[0]  # (N, 3) broadcast to every camera
    torch.testing.assert_close(cams.project(shared), cams.project(shared.expand(len(cams), 7, 3)))


def test_opengl_round_trip_and_convention():
    cams = random_cameras()
    K = cams.K
    back = from_opengl(to_opengl(cams), K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], 64, 48)
    torch.testing.assert_close(back.R, cams.R, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.t, cams.t, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.K, cams.K)
    # an OpenGL camera at z = 3 with identity rotation looks along -z at the origin: our frontal orbit camera
    c2w = torch.eye(4)[None].clone()
    c2w[0, 2, 3] = 3.0
    gl = from_opengl(c2w, 50.0, 50.0, 32.0, 24.0, 64, 48)
    frontal = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 3.0, 30.0, 64, 48)
    torch.testing.assert_close(gl.R, frontal.R, atol=1e-6, rtol=0)
    torch.testing.assert_close(gl.t, frontal.t, atol=1e-6, rtol=0)


def test_resized_scales_intrinsics_exactly_and_round_trips():
    cams = random_cameras()
    small = cams.resized(32, 24)
    torch.testing.assert_close(small.K[:, :2, 2], cams.K[:, :2, 2] / 2)  # centred stays centred
    points = random_points(len(cams), 9)
    torch.testing.assert_close(small.project(points)[..., :2], cams.project(points)[..., :2] / 2)
    back = small.resized(64, 48)
    torch.testing.assert_close(back.K, cams.K)
    assert (back.width, back.height) == (64, 48)


def test_cropped_intrinsics_match_cropping_the_projected_points():
    cams = random_cameras()
    g = torch.Generator().manual_seed(3)
    boxes = torch.cat([torch.rand(len(cams), 2, generator=g) * 20 - 5,
                       (10 + torch.rand(len(cams), 1, generator=g) * 30).expand(-1, 2)], dim=-1)
    crops = cams.cropped(boxes, 16)
    points = random_points(len(cams), 9)
    uv = cams.project(points)[..., :2]
    expected = (uv - boxes[:, None, :2]) * 16 / boxes[:, None, 2:]
    torch.testing.assert_close(crops.project(points)[..., :2], expected, atol=1e-4, rtol=0)
    assert (crops.width, crops.height) == (16, 16)


def test_pixel_rays_pass_through_the_pixel_centres():
    cams = random_cameras(3)
    origins, dirs = cams.pixel_rays()
    assert dirs.shape == (3, 48, 64, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, 48, 64))
    torch.testing.assert_close(origins, cams.centers)
    # a point at 1.3 m along the ray of pixel (row 5, col 40) projects to that pixel's centre (40.5, 5.5)
    point = origins + 1.3 * dirs[:, 5, 40]
    uvz = cams.project(point[:, None])[:, 0]
    torch.testing.assert_close(uvz[:, :2], torch.tensor([40.5, 5.5]).expand(3, 2), atol=1e-3, rtol=0)


def test_indexing_and_cat_keep_the_batch_dim():
    cams = random_cameras(4)
    assert len(cams[0]) == len(cams[-1]) == len(cams[torch.tensor(2)]) == 1 and len(cams[1:3]) == 2
    torch.testing.assert_close(cams[-1].R, cams.R[3:])
    mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(cams[mask].t, cams.t[mask])
    both = Cameras.cat([cams[:1], cams[1:]])
    torch.testing.assert_close(both.R, cams.R)
    assert cams.to(torch.float64).R.dtype == torch.float64


# ---- angles and view sets ---------------------------------------------------------------------------


def test_angular_distance_known_values():
    cases = [  # (az1, el1, az2, el2) -> degrees
        ((0, 0, 90, 0), 90.0), ((0, 0, 0, 90), 90.0), ((0, 0, 180, 0), 180.0), ((0, 0, 0, -30), 30.0),
        ((170, 0, -170, 0), 20.0),  # across the +-180 seam
        ((0, 45, 180, 45), 90.0),  # over the top of the head
        ((0, 90, 123, 90), 0.0),  # azimuth is meaningless at the pole
        ((0, 0, 1e-3, 0), 1e-3),  # accurate at small angles (atan2 form)
    ]
    args = torch.tensor([c for c, _ in cases], dtype=torch.float64).unbind(-1)
    d = angular_distance(*args)
    torch.testing.assert_close(d, torch.tensor([e for _, e in cases], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(angular_distance(args[2], args[3], args[0], args[1]), d)  # symmetric


@pytest.mark.parametrize("name, views, others", [("120", 32, 24), ("360", 48, 40)])
def test_view_set_counts_and_clusters_partition_the_other_views(name, views, others):
    vs = view_set(name)
    assert vs.azimuth.shape == vs.elevation.shape == vs.key.shape == (views,)
    assert vs.key.sum() == 8
    members = sorted(i for c in vs.clusters for i in c)
    assert members == (~vs.key).nonzero()[:, 0].tolist()  # every other view in exactly one cluster
    assert len(vs.clusters) == others // 4 and all(len(c) == 4 for c in vs.clusters)
    assert all(len(k) == 4 and all(vs.key[i] for i in k) for k in vs.cluster_keys)
    # no two views coincide
    d = angular_distance(vs.azimuth[:, None], vs.elevation[:, None], vs.azimuth, vs.elevation)
    assert (d + 360 * torch.eye(views)).min() > 9.9


def test_view_set_angle_ranges():
    vs = view_set("120")
    assert vs.azimuth.abs().max() == 60 and vs.elevation.max() - vs.elevation.min() == 30
    assert vs.azimuth[vs.key].abs().max() < 60 and vs.elevation[vs.key].abs().max() < 15  # keys inside
    vs = view_set("360")
    assert vs.elevation.max() == 90 and vs.elevation.min() == -30
    # azimuths cover the full circle: no gap wider than 60 degrees between sorted azimuths
    az = torch.sort(vs.azimuth[vs.elevation < 90] % 360).values
    gaps = torch.cat([az.diff(), (az[:1] + 360 - az[-1])])
    assert gaps.max() <= 60
    keys_az = torch.sort(vs.azimuth[vs.key] % 360).values
    torch.testing.assert_close(keys_az.diff(), torch.full((7,), 45.0))  # keys every 45 degrees around


@pytest.mark.parametrize("name, bound", [
    # "120": one grid cell of the 6 x 4 grid of other views: 24 x 10 degrees, diagonal 25.6 degrees
    ("120", 26.0),
    # "360": the widest cell (45 degrees of azimuth from elevation 10 to 35) has a 47.9-degree diagonal;
    # the 4 back views of the 7-ring at elevation 65 span 48.7 degrees
    ("360", 49.0),
])
def test_clusters_are_compact_and_mirror_symmetric(name, bound):
    vs = view_set(name)
    for c in vs.clusters:
        az, el = vs.azimuth[c], vs.elevation[c]
        assert angular_distance(az[:, None], el[:, None], az, el).max() < bound
    # mirroring the head (azimuth -> -azimuth) maps the clustering onto itself
    views = [(round(a, 3), e) for a, e in zip(vs.azimuth.tolist(), vs.elevation.tolist())]
    mirror = [views.index((a if a in (0, 180) else -a, e)) for a, e in views]  # azimuths lie in (-180, 180]
    assert sorted(sorted(mirror[i] for i in c) for c in vs.clusters) == sorted(vs.clusters)


@pytest.mark.parametrize("name", ["120", "360"])
def test_cluster_keys_are_the_nearest_keys_to_the_cluster_centre(name):
    vs = view_set(name)
    dirs = view_directions(vs.azimuth.double(), vs.elevation.double())
    keys = vs.key.nonzero()[:, 0].tolist()
    for cluster, chosen in zip(vs.clusters, vs.cluster_keys):
        centre = dirs[cluster].mean(0)
        centre = centre / centre.norm()
        angle = {k: math.degrees(math.acos(min(1.0, float(dirs[k] @ centre)))) for k in keys}
        others = [angle[k] for k in keys if k not in chosen]
        assert max(angle[k] for k in chosen) <= min(others) + 1e-6
        assert all(angle[a] <= angle[b] + 1e-6 for a, b in zip(chosen, chosen[1:]))  # nearest first


def test_view_set_cameras_look_at_the_head():
    vs = view_set("360")
    cams = vs.cameras(radius=1.5, fov_deg=20.0, width=32, height=32)
    assert len(cams) == 48 and torch.isfinite(cams.R).all()
    torch.testing.assert_close(cams.project(torch.zeros(1, 3))[:, 0, :2], torch.full((48, 2), 16.0),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(cams.centers / 1.5, view_directions(vs.azimuth, vs.elevation),
                               atol=1e-5, rtol=0)


# ---- head crops -------------------------------------------------------------------------------------


def test_head_crop_box_is_square_centred_and_25_percent_larger():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3, 50, 2, generator=g) * torch.tensor([40.0, 20.0]) + torch.tensor([10.0, 30.0])
    boxes = head_crop_boxes(points)
    lo, hi = points.amin(1), points.amax(1)
    side = 1.25 * (hi - lo).amax(-1)
    torch.testing.assert_close(boxes[:, 2], side)
    torch.testing.assert_close(boxes[:, 3], side)
    torch.testing.assert_close(boxes[:, :2] + boxes[:, 2:] / 2, (lo + hi) / 2)


def test_head_crop_smoothing_reduces_jitter_and_keeps_constant_tracks():
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[0.0, 0.0], [20.0, 30.0]])  # tight box corners
    jitter = torch.randn(60, 1, 2, generator=g) * 2
    noisy = base + jitter  # (F=60, N=2, 2): the box moves rigidly with noise
    raw = head_crop_boxes(noisy)
    smooth = head_crop_boxes(noisy, smooth_sigma=3.0)
    assert (smooth[:, :2].var(0) < 0.3 * raw[:, :2].var(0)).all()
    reference = gaussian_filter1d(raw.double().numpy(), 3.0, axis=0, mode="nearest")  # scipy twin
    np.testing.assert_allclose(smooth.numpy(), reference, atol=1e-4)
    constant = head_crop_boxes(base.expand(5, 2, 2), smooth_sigma=4.0)  # radius 16 > 5 frames
    torch.testing.assert_close(constant, head_crop_boxes(base.expand(5, 2, 2)))
    torch.testing.assert_close(head_crop_boxes(noisy, smooth_sigma=0), raw)


def test_outcrop_mask_counts_pixels_outside_the_photo():
    inside = outcrop_mask(torch.tensor([[10.0, 10.0, 40.0, 40.0]]), 100, 80, 32)
    assert inside.shape == (1, 32, 32) and inside.sum() == 0
    # box from u = -20: crop columns whose centres u = -20 + j + 0.5 < 0, i.e. j < 20, are outside
    left = outcrop_mask(torch.tensor([[-20.0, 10.0, 40.0, 40.0], [-20.0, 10.0, 40.0, 40.0]]), 100, 80, 40)
    assert left[0].sum() == 20 * 40 and left[0, :, :20].all() and not left[0, :, 20:].any()
    half = outcrop_mask(torch.tensor([[-20.0, 10.0, 40.0, 40.0]]), 100, 80, 20)  # 2 photo px per crop px
    assert half.sum() == 10 * 20
    # hanging over the bottom-right corner by 10 px each way: 10 rows + 10 columns - their overlap
    corner = outcrop_mask(torch.tensor([[70, 50, 40, 40]]), 100, 80, 40)
    assert corner.sum() == 10 * 40 + 10 * 40 - 10 * 10


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(B, 3, 3\)"):
        Cameras(torch.eye(3), torch.zeros(1, 3), torch.eye(3)[None], 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 3\) with B = 1"):
        Cameras(torch.eye(3)[None], torch.zeros(2, 3), torch.eye(3)[None], 8, 8)
    with pytest.raises(ValueError, match="positive int"):
        Cameras(torch.eye(3)[None], torch.zeros(1, 3), torch.eye(3)[None], 0, 8)
    cams = random_cameras(2)
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(B, N, 3\) with B = 2"):
        cams.project(torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        cams.cropped(torch.zeros(2, 3), 16)
    with pytest.raises(ValueError, match="one image size"):
        Cameras.cat([cams, cams.resized(8, 8)])
    with pytest.raises(ValueError, match=r"\(F, N, 2\)"):
        head_crop_boxes(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"valid names: \['120', '360', 'small'\]"):
        view_set("90")
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        from_opengl(torch.eye(4), 1.0, 1.0, 0.0, 0.0, 8, 8)


def test_small_view_set_is_one_key_job_and_one_cluster():
    vs = view_set("small")
    assert len(vs.azimuth) == 8 and vs.key.sum() == 4
    assert vs.clusters == [[4, 5, 6, 7]] and sorted(vs.cluster_keys[0]) == [0, 1, 2, 3]
