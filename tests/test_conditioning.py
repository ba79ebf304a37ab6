"""MVP4D conditioning maps (§3.2, S2.1): layout, frame rule, ray maps, pose/expression/motion semantics."""

import math

import pytest
import torch

from morph4d.cameras import orbit_cameras, view_set
from morph4d.conditioning.maps import NUM_CONDITIONING_CHANNELS, ConditioningConfig, ConditioningLayout, HeadConditioner
from morph4d.heads.builtin import load_builtin_head
from morph4d.heads.model import HeadModel
from morph4d.models.latent import check_frame_count, kept_frames, latent_frames

RES = 128  # images 128 px -> latents 16 px, rasterized at 32 px


@pytest.fixture(scope="module")
def head():
    return load_builtin_head()


@pytest.fixture(scope="module")
def cond(head):
    return HeadConditioner(head)


def front(res=RES, az=0.0, el=0.0, radius=0.75, fov=26.0):
    return orbit_cameras(torch.tensor([az]), torch.tensor([el]), radius, fov, res, res, target=(0, -0.01, 0))


def frames(head, n, **fields):
    p = head.zero_params((n,))
    p.shape = torch.zeros(head.num_shape)
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def test_layout_order_and_count():
    lay = ConditioningLayout.from_config()
    assert lay.num_channels == NUM_CONDITIONING_CHANNELS == 42 + 3 + 3 + 3 + 1 + 1 + 6
    assert list(lay.groups()) == ["pose", "expression", "ray_direction", "ray_origin", "reference_mask",
                                  "outcrop_mask", "motion"]
    stops = [s.stop for s in lay.groups().values()]
    starts = [s.start for s in lay.groups().values()]
    assert starts == [0] + stops[:-1] and stops[-1] == lay.num_channels  # contiguous, in order
    names = lay.channel_names()
    assert len(names) == lay.num_channels and len(set(names)) == len(names)
    assert names[lay.expression.start] == "expression.x" and names[-1] == "motion.2.v"
    raw = ConditioningLayout.from_config(ConditioningConfig(pose_encoding="raw"))
    assert raw.pose == slice(0, 3) and raw.num_channels == NUM_CONDITIONING_CHANNELS - 39
    with pytest.raises(ValueError, match="pose_encoding"):
        ConditioningConfig(pose_encoding="fourier")


def test_projection_group_is_ours_last_and_off_by_default():
    """Issue 17: the encoded reference projection (16) + confidence (1) after MVP4D's 59 channels, so the paper's
    layout is unchanged and a model's first 59 input channels mean the same with or without it."""
    from morph4d.conditioning.maps import fill_projection
    plain, lay = ConditioningLayout.from_config(), ConditioningLayout.from_config(ConditioningConfig(
        reference_projection=True))
    assert "projection" not in plain.groups() and plain.projection.stop == plain.projection.start
    assert lay.projection == slice(59, 76) and lay.num_channels == 76
    assert all(getattr(lay, g) == getattr(plain, g) for g in plain.groups())
    assert lay.channel_names()[59] == "projection.latent0" and lay.channel_names()[-1] == "projection.confidence"
    assert "projection 59-75 (76 channels)" in lay.describe() and "(59 channels)" in plain.describe()
    cond = torch.zeros(2, 3, 76, 4, 4)
    lat, conf = torch.randn(2, 3, 16, 4, 4), torch.rand(2, 3, 1, 4, 4)
    out = fill_projection(cond, lay, lat, conf)
    assert torch.equal(out[:, :, 59:75], lat) and torch.equal(out[:, :, 75:], conf) and (out[:, :, :59] == 0).all()
    with pytest.raises(ValueError, match="no projection channels"):
        fill_projection(torch.zeros(2, 3, 59, 4, 4), plain, lat, conf)
    with pytest.raises(ValueError, match="do not fit"):
        fill_projection(cond, lay, lat[:, :, :8], conf)


def test_maps_have_the_layout_channel_count(head, cond):
    c = cond.video(frames(head, 9), front(), front())
    assert c.shape == (1, 3, NUM_CONDITIONING_CHANNELS, RES // 8, RES // 8)
    r = cond.reference(head.zero_params(), front())
    assert r.shape == (NUM_CONDITIONING_CHANNELS, RES // 8, RES // 8)
    lay = cond.layout
    assert (r[lay.reference_mask] == 1).all() and (c[:, :, lay.reference_mask] == 0).all()
    assert (r[lay.motion] == 0).all() and (r[lay.outcrop_mask] == 0).all()


def test_frame_count_rule():
    assert kept_frames(49) == list(range(0, 49, 4)) and latent_frames(49) == 13
    assert kept_frames(1) == [0] and kept_frames(5) == [0, 4]
    for bad in (0, 2, 48, 50):
        with pytest.raises(ValueError, match=r"1 \+ 4k"):
            check_frame_count(bad)


def test_frame_count_rule_in_video(head, cond):
    with pytest.raises(ValueError, match=r"got 8 frames.*1 \+ 4k"):
        cond.video(frames(head, 8), front(), front())


def test_reference_camera_rays_are_its_own_pixel_rays_and_origin_zero(head, cond):
    cam = front(az=25.0, el=10.0)
    r = cond.reference(head.zero_params(), cam)
    lay, h = cond.layout, RES // 8
    # independent computation: K^-1 (u, v, 1) at latent pixel centres, normalised, in camera coordinates
    K = cam.K[0] / 8
    K[2, 2] = 1
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(h) + 0.5, indexing="ij")
    d = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], 0)
    d = d / d.norm(dim=0, keepdim=True)
    torch.testing.assert_close(r[lay.ray_direction], d, atol=1e-5, rtol=0)
    assert r[lay.ray_origin].abs().max() < 1e-6


def test_other_camera_origin_is_its_centre_in_the_reference_frame(head, cond):
    ref, other = front(), front(az=90.0)
    c = cond.video(frames(head, 1), other, ref)[0, 0]
    centre_ref = ref.R[0] @ other.centers[0] + ref.t[0]  # other camera centre in the reference frame
    # 90 degrees to the subject's left of a camera 0.75 m away: x = +0.75 (right), z = 0.75 (forward)
    torch.testing.assert_close(centre_ref, torch.tensor([0.75, 0.0, 0.75]), atol=1e-5, rtol=0)
    torch.testing.assert_close(c[cond.layout.ray_origin][:, 3, 5], centre_ref, atol=1e-5, rtol=0)


def _channel_means(c, sl, mask):
    return torch.stack([c[i][mask].mean() for i in range(sl.start, sl.stop)])


def test_head_rotation_changes_pose_map_not_expression_values(head, cond):
    lay = cond.layout
    names = head.expression_names
    roll = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.radians(40)]])  # roll about the head's z
    e = torch.zeros(2, head.num_expression)
    # 1. neutral expression: rotating the head changes the pose map, the expression map stays 0
    c = cond.video(frames(head, 1, rotation=roll[1:]), front(), front())[0, 0]
    c0 = cond.video(frames(head, 1), front(), front())[0, 0]
    assert (c[lay.pose] - c0[lay.pose]).abs().mean() > 0.05
    assert c[lay.expression].abs().max() < 1e-4  # float round-off of the skinning only
    # 2. with a smile: the expression vectors are not rotated with the head (computed before the global
    #    transform), so their means over the face keep their direction under a 40-degree roll; had they
    #    been rotated, the upward (y) mean would leak into x
    e[:, names.index("smile")] = 1.0
    maps = [cond.video(frames(head, 1, rotation=roll[k: k + 1], expression=e[k: k + 1]), front(), front())[0, 0]
            for k in range(2)]
    masks = [m[lay.expression].abs().sum(0) > 1e-3 for m in maps]
    m0, m1 = (_channel_means(m, lay.expression, k) for m, k in zip(maps, masks))
    assert m0[1] > 0.05 and m0[1] > 4 * m0[0].abs()  # the smile lifts the mouth corners (+y)
    # a rotated vector field would move sin(40 deg) = 64% of the y mean into x; allow 15% for sampling
    torch.testing.assert_close(m1, m0, atol=0.15 * m0.abs().max(), rtol=0)


def test_expression_change_changes_expression_map_only(head):
    """At a fixed pose an expression changes the expression map; the canonical coordinates seen at each
    pixel (raw pose map) shift only by the skin's own motion (a few mm), and nothing else changes."""
    cond = HeadConditioner(head, ConditioningConfig(pose_encoding="raw"))
    lay = cond.layout
    e = torch.zeros(1, head.num_expression)
    e[0, head.expression_names.index("brow_raise")] = 1.0
    c0 = cond.video(frames(head, 1), front(), front())[0, 0]
    c1 = cond.video(frames(head, 1, expression=e), front(), front())[0, 0]
    changed = (c1 - c0).abs() > 1e-6
    assert (c1 - c0)[lay.expression].abs().max() > 0.3
    for group in ("ray_direction", "ray_origin", "reference_mask", "outcrop_mask", "motion"):
        assert not changed[getattr(lay, group)].any(), group
    half_extent = (head.template.max(0).values - head.template.min(0).values).max() / 2
    skin_motion = 0.0055 / half_extent  # brow_raise moves the brows by at most 5.5 mm
    assert (c1 - c0)[lay.pose].abs().max() < 1.5 * skin_motion


def test_motion_maps_zero_for_a_static_sequence(head, cond):
    c = cond.video(frames(head, 9), front(), front())
    assert c[:, :, cond.layout.motion].abs().max() == 0


def test_motion_maps_equal_a_known_screen_translation(head, cond):
    """The head moves right by 2 mm per frame; at depth z the screen displacement from kept frame k to
    dropped frame j is fx * 0.002 * (j - k) / z pixels (pure x translation, camera looking along -z)."""
    n = 9
    trans = torch.zeros(n, 3)
    trans[:, 0] = 0.002 * torch.arange(n)
    cam = front(radius=0.75)
    c = cond.video(frames(head, n, translation=trans), cam, cam)[0]  # (K=3, C, h, w)
    lay = cond.layout
    assert c[0, lay.motion].abs().max() == 0  # frame 0: no motion maps
    # expected per latent pixel from the kept frame's depth map, rasterized at the same (2x) resolution
    from morph4d.mesh.raster import rasterize
    verts = head(frames(head, n, translation=trans))
    s = 2 * RES // 8
    for k_lat, k in ((1, 4), (2, 8)):
        r = rasterize(verts[k], head.faces, cam.resized(s, s))
        inv_z = torch.where(r.mask, 1.0 / r.depth.clamp(min=1e-6), 0.0)[0]
        for slot, j in enumerate((k - 3, k - 2, k - 1)):
            du = cam.K[0, 0, 0] * 0.002 * (j - k) * inv_z / RES / ConditioningConfig().motion_scale
            expected = torch.nn.functional.avg_pool2d(du[None, None], 2)[0, 0]
            got_u = c[k_lat, lay.motion.start + 2 * slot]
            got_v = c[k_lat, lay.motion.start + 2 * slot + 1]
            torch.testing.assert_close(got_u, expected, atol=0.01 * expected.abs().max(), rtol=0)
            assert got_v.abs().max() < 0.01 * expected.abs().max()


def test_given_mask_and_outcrop_are_placed_per_view_and_frame(head, cond):
    cams = view_set("120").cameras(0.75, 26.0, RES, RES)[[0, 1]]
    given = torch.tensor([[True, False, False], [False, True, True]])
    h = RES // 8
    outcrop = torch.zeros(2, h, h)
    outcrop[1, :, :3] = 1
    c = cond.video(frames(head, 9), cams, cams[[0]], given=given, outcrop=outcrop)
    lay = cond.layout
    assert torch.equal(c[:, :, lay.reference_mask].amax((2, 3, 4)) > 0, given)
    assert c[0, :, lay.outcrop_mask].max() == 0 and (c[1, :, lay.outcrop_mask, :, :3] == 1).all()
    with pytest.raises(ValueError, match=r"given must be \(V=2, F_lat=3\)"):
        cond.video(frames(head, 9), cams, cams[[0]], given=torch.zeros(2, 2, dtype=torch.bool))


def test_supersampling_is_area_downsampling_of_a_finer_raster(head):
    """Maps at supersample 2 equal 2x2 means of maps rasterized at twice the latent resolution."""
    fine = HeadConditioner(head, ConditioningConfig(supersample=1))
    coarse = HeadConditioner(head, ConditioningConfig(supersample=2))
    p = frames(head, 1)
    a = coarse.video(p, front(RES), front(RES))[0, 0]
    b = fine.video(p, front(2 * RES), front(2 * RES))[0, 0]
    lay = coarse.layout
    pooled = torch.nn.functional.avg_pool2d(b[None, lay.pose], 2)[0]
    torch.testing.assert_close(a[lay.pose], pooled, atol=1e-5, rtol=0)
    edge = (a[lay.pose.start + 1] != 0) & (a[lay.pose.start + 1].abs() < pooled.abs().max() * 0.999)
    assert edge.any()  # partially covered latent pixels exist: the silhouette is anti-aliased


def test_both_head_models_give_the_same_layout(head):
    g = torch.Generator().manual_seed(0)
    n = 200
    verts = torch.randn(n, 3, generator=g) * 0.05
    w = torch.rand(n, 5, generator=g)
    reg = torch.rand(5, n, generator=g)
    flame_like = HeadModel("flame", verts, torch.randint(0, n, (300, 3), generator=g),
                           torch.randn(n, 3, 20, generator=g) * 1e-3, torch.randn(n, 3, 10, generator=g) * 1e-3,
                           reg / reg.sum(1, keepdim=True), w / w.sum(1, keepdim=True),
                           posedirs=torch.randn(36, 3 * n, generator=g) * 1e-4)
    p = flame_like.zero_params((5,))
    p.shape = torch.zeros(20)
    a = HeadConditioner(flame_like).video(p, front(), front())
    b = HeadConditioner(head).video(frames(head, 5), front(), front())
    assert a.shape == b.shape
    assert a[:, :, :42].abs().sum() > 0  # the random FLAME-format mesh is rasterized too


def test_bad_inputs(head, cond):
    with pytest.raises(ValueError, match="divisible by 8"):
        cond.reference(head.zero_params(), front(res=100))
    with pytest.raises(ValueError, match="one frame"):
        cond.reference(frames(head, 2), front())
    with pytest.raises(ValueError, match=r"\(F, \.\.\.\)"):
        cond.video(head.zero_params(), front(), front())
    with pytest.raises(ValueError, match="outcrop must be"):
        cond.reference(head.zero_params(), front(), outcrop=torch.zeros(3, 3))
