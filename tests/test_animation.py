"""Animation file format and the built-in animations."""

import numpy as np
import pytest
import torch

from morph4d.heads.animation import BUILTIN_ANIMATIONS, builtin_animation, get_animation, load_animation
from morph4d.heads.builtin import load_builtin_head
from morph4d.heads.model import HeadModel


@pytest.fixture(scope="module")
def head():
    return load_builtin_head()


def tiny_flame_like():
    """A small FLAME-named model built from the real class (no FLAME file needed)."""
    g = torch.Generator().manual_seed(0)
    n = 30
    w = torch.rand(n, 5, generator=g)
    reg = torch.rand(5, n, generator=g)
    return HeadModel("flame", torch.randn(n, 3, generator=g), torch.randint(0, n, (40, 3), generator=g),
                     torch.randn(n, 3, 10, generator=g), torch.randn(n, 3, 8, generator=g),
                     reg / reg.sum(1, keepdim=True), w / w.sum(1, keepdim=True))


@pytest.mark.parametrize("name", BUILTIN_ANIMATIONS)
def test_builtin_animations_move_and_are_deterministic(head, name):
    a = builtin_animation(name, head, num_frames=33)
    assert a.num_frames == 33 and a.head_model == "builtin"
    a.check_model(head)
    v = head(a.params)
    assert v.shape == (33, head.num_vertices, 3)
    assert (v - v[0]).norm(dim=-1).max() > 0.003  # something moves by more than 3 mm
    b = builtin_animation(name, head, num_frames=33)
    torch.testing.assert_close(a.params.expression, b.params.expression, rtol=0, atol=0)


def test_talk_opens_the_jaw_and_blinks(head):
    a = builtin_animation("talk", head, num_frames=49)
    assert a.params.jaw[:, 0].max() > 0.1 and a.params.jaw[:, 0].min() >= 0
    k = head.expression_names.index("blink_left")
    assert a.params.expression[:, k].max() > 0.9


def test_builtin_animation_on_a_flame_model_keeps_motion_without_named_expressions():
    flame = tiny_flame_like()
    a = builtin_animation("head_turn", flame, num_frames=9)
    assert a.head_model == "flame" and a.params.expression.abs().max() == 0
    assert a.params.neck.abs().max() > 0.3


def test_round_trip_and_flame_style_keys(head, tmp_path):
    a = builtin_animation("smile", head, num_frames=17)
    a.save(tmp_path / "smile.npz")
    b = load_animation(tmp_path / "smile.npz", head)
    for k in ("expression", "jaw", "neck", "eyes", "rotation", "translation"):
        torch.testing.assert_close(getattr(a.params, k), getattr(b.params, k), rtol=0, atol=0)
    assert b.fps == a.fps
    # a tracker's FLAME output: FLAME key names, separate eye poses, no optional fields
    F = 5
    np.savez(tmp_path / "tracked.npz", expr=np.zeros((F, 8)), jaw_pose=np.full((F, 3), 0.1),
             leye_pose=np.zeros((F, 3)), reye_pose=np.ones((F, 3)), global_orient=np.zeros((F, 3)),
             head_model=np.array("flame"))
    t = load_animation(tmp_path / "tracked.npz", tiny_flame_like())
    assert t.num_frames == F and t.params.eyes[0, 3:].tolist() == [1.0, 1.0, 1.0]
    assert t.params.neck.abs().max() == 0


def test_bad_animation_files(head, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_animation(tmp_path / "nope.npz", head)
    np.savez(tmp_path / "nojaw.npz", expression=np.zeros((3, 24)), head_model=np.array("builtin"))
    with pytest.raises(ValueError, match="'jaw'"):
        load_animation(tmp_path / "nojaw.npz", head)
    builtin_animation("talk", tiny_flame_like(), 5).save(tmp_path / "flame_talk.npz")
    with pytest.raises(ValueError, match="'flame' head model"):
        load_animation(tmp_path / "flame_talk.npz", head)
    np.savez(tmp_path / "wrong.npz", expression=np.zeros((3, 7)), jaw=np.zeros((3, 3)),
             head_model=np.array("builtin"))
    with pytest.raises(ValueError, match=r"\(\.\.\., 24\)"):
        load_animation(tmp_path / "wrong.npz", head)
    with pytest.raises(ValueError, match="built-in animation"):
        get_animation("dance", head)
    with pytest.raises(ValueError, match="num_frames"):
        builtin_animation("talk", head, num_frames=0)
