"""The built-in head model and the shared blendshape + LBS machinery (HeadModel)."""

import numpy as np
import pytest
import torch

from morph4d.heads import HeadParams, load_head_model
from morph4d.heads import builtin_gen as gen
from morph4d.heads.builtin import BUILTIN_PATH, load_builtin_head, vertex_colors
from morph4d.heads.model import HeadModel, axis_angle_to_matrix


@pytest.fixture(scope="module")
def head():
    return load_builtin_head()


def _params(m, **fields):
    p = m.zero_params()
    for k, v in fields.items():
        setattr(p, k, torch.as_tensor(v, dtype=torch.float32))
    return p


def test_builtin_sizes_names_and_topology(head):
    assert head.num_shape >= 10 and head.num_expression >= 20
    for name in ("smile", "brow_raise", "blink_left", "blink_right", "pucker"):
        assert name in head.expression_names
    F = head.faces
    assert F.min() >= 0 and F.max() < head.num_vertices
    assert (F[:, 0] != F[:, 1]).all() and (F[:, 1] != F[:, 2]).all() and (F[:, 0] != F[:, 2]).all()
    assert head.uv_faces.shape == F.shape and 0 <= head.uvs.min() and head.uvs.max() <= 1
    for group in ("eye_left", "eye_right", "mouth_cavity", "teeth_upper", "teeth_lower", "tongue", "lips"):
        assert len(head.vertex_groups[group]) > 0
    # the whole head reaches the back of the head, the crown and the neck (360-degree views)
    t = head.template
    assert t[:, 2].min() < -0.09 and t[:, 1].max() > 0.11 and t[:, 1].min() < -0.2


def test_head_surface_is_closed_except_the_mouth_and_eye_cuts(head):
    """Every edge of the head surface has two triangles, except along the mouth and eyelid cuts."""
    head_set = set(head.vertex_groups["head"].tolist())
    faces = [f for f in head.faces.tolist() if f[0] in head_set]
    count = {}
    for a, b, c in faces:
        for e in ((a, b), (b, c), (c, a)):
            key = tuple(sorted(e))
            count[key] = count.get(key, 0) + 1
    assert max(count.values()) == 2
    cut = set()
    for orig, copies in gen.TOPO.dup.values():
        cut |= set(orig.tolist()) | set(copies.tolist())
        row = orig[0] // gen.C_
        cut |= {int(orig[0] - 1), int(orig[-1] + 1)}  # the shared corners
        assert row in (gen.ROW_EYE, gen.ROW_MOUTH)
    border = [e for e, n in count.items() if n == 1]
    assert len(border) > 0 and all(a in cut and b in cut for a, b in border)


def test_faces_point_outwards(head):
    """Counter-clockwise faces seen from outside: the crown and neck-bottom fans point away from the ray
    origin, and the head's signed volume is positive (it would be negative if the grid were inverted)."""
    v, C, R = head.template, gen.C_, gen.R_
    n_head = C + 2 * (R - 1) * C + C  # top fan, grid, bottom fan
    f = head.faces[:n_head]
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    outward = (torch.cross(v1 - v0, v2 - v0, dim=-1) * ((v0 + v1 + v2) / 3 - torch.tensor(
        gen.RAY_ORIGIN, dtype=torch.float32))).sum(-1)
    assert (torch.cat([outward[:C], outward[-C:]]) > 0).all()
    assert (v0 * torch.cross(v1, v2, dim=-1)).sum() / 6 > 0.002  # > 2 litres


def test_shipped_file_matches_the_generator(head):
    """The shipped .npz is what `python -m morph4d.heads.builtin_gen` produces (template, rig, bases)."""
    template = gen.surface(gen.Sculpt())
    np.testing.assert_allclose(head.template.numpy(), template, atol=1e-6)
    np.testing.assert_array_equal(head.faces.numpy(), gen.TOPO.faces)
    reg, weights = gen.rig(template)
    np.testing.assert_allclose(head.joint_regressor.numpy(), reg, atol=1e-6)
    np.testing.assert_allclose(head.skin_weights.numpy(), weights, atol=1e-6)
    k = head.expression_names.index("smile")
    np.testing.assert_allclose(head.exprdirs[:, :, k].numpy(), gen.expressed(gen.Sculpt(), "smile", template)
                               - template, atol=1e-6)
    k = head.expression_names.index("blink_left")
    np.testing.assert_allclose(head.exprdirs[:, :, k].numpy(),
                               gen.expressed(gen.Sculpt(), "blink_left", template) - template, atol=1e-6)


def test_zero_params_give_the_template_and_weights_are_normalised(head):
    np.testing.assert_allclose(head(head.zero_params()).numpy(), head.template.numpy(), atol=1e-7)
    np.testing.assert_allclose(head.skin_weights.sum(1).numpy(), 1.0, atol=1e-6)
    assert (head.skin_weights >= 0).all()


def test_mesh_is_left_right_symmetric(head):
    t = head.template
    mirrored = t * torch.tensor([-1.0, 1.0, 1.0])
    d = torch.cdist(mirrored[::7], t).min(dim=1).values
    assert d.max() < 1e-4


def _lip_gap(m, verts):
    orig, copies = gen.TOPO.dup["mouth"]
    mid = len(orig) // 2
    return (verts[..., orig[mid], :] - verts[..., copies[mid], :]).norm(dim=-1)


def test_jaw_joint_opens_the_mouth(head):
    closed = head(head.zero_params())
    opened = head(_params(head, jaw=[0.3, 0.0, 0.0]))
    assert _lip_gap(head, closed) < 1e-6
    assert _lip_gap(head, opened) > 0.012  # > 12 mm between the lips at the middle
    upper = gen.TOPO.dup["mouth"][0]
    assert (opened[upper] - closed[upper]).norm(dim=-1).max() < 2e-3  # the upper lip stays nearly put
    chin = closed[:, 1].argmin()  # lowest point: the neck; the chin is the lowest point in front
    front = closed[:, 2] > 0.06
    chin = torch.where(front)[0][closed[front, 1].argmin()]
    assert opened[chin, 1] < closed[chin, 1] - 0.01  # the chin drops by > 1 cm


def _lid_gap(verts, side):
    orig, copies = gen.TOPO.dup[f"eye_{side}"]
    mid = len(orig) // 2
    return (verts[orig[mid]] - verts[copies[mid]]).norm()


def test_blinks_close_one_eye_each(head):
    names = head.expression_names
    rest = head(head.zero_params())
    assert _lid_gap(rest, "left") > 0.006 and _lid_gap(rest, "right") > 0.006
    e = torch.zeros(head.num_expression)
    e[names.index("blink_left")] = 1.0
    blink = head(_params(head, expression=e))
    assert _lid_gap(blink, "left") < 0.001
    assert abs(_lid_gap(blink, "right") - _lid_gap(rest, "right")) < 1e-6


def test_eyes_rotate_about_their_centres(head):
    p = _params(head, eyes=[0.0, 0.4, 0.0, 0.0, 0.4, 0.0])  # both eyes look towards +x
    rest, posed = head(head.zero_params()), head(p)
    joints = head.joints(head.zero_params())
    for joint, side in ((3, "left"), (4, "right")):
        idx = head.vertex_groups[f"eye_{side}"]
        r0 = (rest[idx] - joints[joint]).norm(dim=-1)
        r1 = (posed[idx] - joints[joint]).norm(dim=-1)
        torch.testing.assert_close(r0, r1, atol=1e-6, rtol=0)
        pupil = head.vertex_groups[f"pupil_{side}"]
        assert posed[pupil, 0].mean() > rest[pupil, 0].mean() + 0.003


def test_global_transform_and_apply_global(head):
    rot = torch.tensor([0.0, 0.5, 0.0])
    p = _params(head, rotation=rot, translation=[0.1, 0.0, 0.0], neck=[0.1, 0.0, 0.0])
    posed = head(p)
    root = head.joints(head.zero_params())[0]
    expected = (head(_params(head, neck=[0.1, 0.0, 0.0])) - root) @ axis_angle_to_matrix(rot).T + root
    torch.testing.assert_close(posed, expected + torch.tensor([0.1, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(head(p, apply_global=False), head.template, atol=1e-7, rtol=0)


def test_shape_components_change_identity(head):
    names = head.shape_names
    s = torch.zeros(head.num_shape)
    s[names.index("head_width")] = 2.0
    wide = head.neutral(s)
    width = lambda v: (v[:, 0].max() - v[:, 0].min()).item()  # noqa: E731
    assert width(wide) > width(head.template) + 0.005


def test_batched_params_match_single(head):
    g = torch.Generator().manual_seed(0)
    p = HeadParams(shape=0.5 * torch.randn(head.num_shape, generator=g),
                   expression=0.5 * torch.randn(2, 3, head.num_expression, generator=g),
                   jaw=0.1 * torch.rand(2, 3, 3, generator=g), neck=0.1 * torch.randn(2, 3, 3, generator=g),
                   eyes=0.1 * torch.randn(2, 3, 6, generator=g), rotation=0.2 * torch.randn(2, 3, 3, generator=g),
                   translation=0.01 * torch.randn(2, 3, 3, generator=g))
    out = head(p)
    assert out.shape == (2, 3, head.num_vertices, 3)
    one = HeadParams(p.shape, p.expression[1, 2], p.jaw[1, 2], p.neck[1, 2], p.eyes[1, 2], p.rotation[1, 2],
                     p.translation[1, 2])
    torch.testing.assert_close(out[1, 2], head(one), atol=1e-6, rtol=0)


def test_gradients_reach_every_parameter(head):
    p = head.zero_params()
    for name in ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation"):
        getattr(p, name).requires_grad_(True)
    head(p).square().sum().backward()
    for name in ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation"):
        assert getattr(p, name).grad.abs().sum() > 0, name


def test_wrong_parameter_sizes_are_rejected(head):
    p = head.zero_params()
    p.expression = torch.zeros(head.num_expression + 1)
    with pytest.raises(ValueError, match=rf"\(\.\.\., {head.num_expression}\)"):
        head(p)
    p = head.zero_params((4,))
    p.jaw = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="batch dims"):
        head(p)


def test_npz_round_trip_and_bad_files(head, tmp_path):
    path = tmp_path / "h.npz"
    head.save_npz(path)
    again = HeadModel.load_npz(path)
    assert again.expression_names == head.expression_names
    g = torch.Generator().manual_seed(1)
    p = head.zero_params()
    p.expression = torch.randn(head.num_expression, generator=g)
    torch.testing.assert_close(again(p), head(p), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="not found"):
        HeadModel.load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="template"):
        HeadModel.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="missing keys"):
        HeadModel.load_npz(tmp_path / "partial.npz")


def test_load_head_model_dispatch_and_errors():
    assert load_head_model("builtin").name == "builtin"
    with pytest.raises(ValueError, match="flame-path"):
        load_head_model("flame")
    with pytest.raises(ValueError, match="builtin, flame"):
        load_head_model("smpl")


def test_vertex_colors(head):
    c = vertex_colors(head)
    assert c.shape == (head.num_vertices, 3) and 0 <= c.min() and c.max() <= 1
    pupil = head.vertex_groups["pupil_left"]
    assert c[pupil].max() < 0.1
    assert BUILTIN_PATH.is_file()
