"""`morph4d export`: the animated .m4da format round-trips to Avatar.world through its documented placement
(numpy, avatar.animated.place), the .ply frame equals Avatar.world, and bad input exits 2 without touching
existing outputs."""

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from morph4d.avatar.animated import MAGIC, place, read_animated
from morph4d.avatar.gaussians import quaternion_to_matrix
from morph4d.avatar.gaussians.export import read_ply
from morph4d.avatar.model import load_avatar
from morph4d.avatar.viewer import animation_vertices
from morph4d.cli import main


def _compare(p: dict, w) -> None:
    """Placement from the file vs Avatar.world: float16 parameters bound the differences."""
    R = quaternion_to_matrix(F.normalize(w.quats, dim=-1)).double().numpy()
    np.testing.assert_allclose(p["means"], w.means.double().numpy(), atol=5e-5)
    np.testing.assert_allclose(p["rotations"], R, atol=2e-3)
    np.testing.assert_allclose(p["scales"], w.scales.double().numpy(), rtol=5e-3)
    np.testing.assert_allclose(p["opacities"], w.opacities.double().numpy(), atol=2e-3)
    rgb = (w.sh[:, 0] * 0.28209479177387814 + 0.5).clamp(min=0).double().numpy()
    np.testing.assert_allclose(p["rgb"], rgb, atol=2e-3)
    s = w.scales.double().numpy()
    cov = R * (s ** 2)[:, None, :] @ R.transpose(0, 2, 1)
    assert (np.abs(p["covariances"] - cov).max(axis=(1, 2)) <= 1e-2 * s.max(1) ** 2).all()


@torch.no_grad()
def test_animated_file_reproduces_avatar_world(fitted_avatar, tmp_path):
    """Every frame of the fitted sequence, deformation included, and a re-animation without it."""
    avatar = load_avatar(fitted_avatar)
    assert main(["export", str(fitted_avatar), "--format", "animated", "--animation", "fitted",
                 "--out", str(tmp_path / "fitted.m4da")]) == 0
    anim = read_animated(tmp_path / "fitted.m4da")
    vertices, fitted, _ = animation_vertices(avatar, "fitted")
    assert fitted and anim.num_frames == vertices.shape[0] == avatar.num_frames == 3
    assert (anim.deformation is not None) == (avatar.deformation is not None)
    if anim.deformation is not None:
        assert np.abs(anim.deformation).max() > 0 and anim.deformation.shape == (3, len(avatar.gaussians), 3)
    for f in range(anim.num_frames):
        _compare(place(anim, f), avatar.world(vertices[f], f))

    # a built-in animation into a folder: the mesh alone (frame=None), no deformation stored
    assert main(["export", str(fitted_avatar), "--format", "animated", "--animation", "smile", "--frames", "4",
                 "--out", str(tmp_path / "dir")]) == 0
    anim = read_animated(tmp_path / "dir" / "avatar.m4da")
    vertices, fitted, fps = animation_vertices(avatar, "smile", 4)
    assert not fitted and anim.deformation is None and anim.num_frames == 4 and anim.fps == fps == 25.0
    _compare(place(anim, 3), avatar.world(vertices[3], None))
    assert anim.meta["animation"] == "smile" and set(anim.camera) == {"target", "position", "up", "fov_deg"}


def test_animated_layout_is_browser_loadable(fitted_avatar, tmp_path):
    """The header, offsets and alignments docs/AVATAR_FORMAT.md promises (typed arrays need them)."""
    assert main(["export", str(fitted_avatar), "--format", "animated", "--frames", "2",
                 "--out", str(tmp_path / "a.m4da")]) == 0
    raw = (tmp_path / "a.m4da").read_bytes()
    version, length = struct.unpack_from("<II", raw, 4)
    assert raw[:4] == MAGIC and version == 1 and (12 + length) % 8 == 0
    header = json.loads(raw[12:12 + length])
    assert header["format"] == "morph4d-animated-avatar" and header["num_frames"] == 2
    sizes = {"uint32": 4, "uint16": 2, "float32": 4, "float16": 2}
    end = 0
    for name, b in header["buffers"].items():
        assert b["offset"] % 8 == 0 and b["offset"] >= end, name
        assert b["byte_length"] == sizes[b["dtype"]] * int(np.prod(b["shape"])), name
        end = b["offset"] + b["byte_length"]
    assert 12 + length + end <= len(raw) < 12 + length + end + 8
    G, N = header["num_gaussians"], header["num_vertices"]
    assert header["buffers"]["vertices"]["shape"] == [2, N, 3] and header["buffers"]["sh"]["shape"][0] == G
    with pytest.raises(ValueError, match="truncated"):
        (tmp_path / "cut.m4da").write_bytes(raw[:len(raw) // 2])
        read_animated(tmp_path / "cut.m4da")
    # a broken header or buffer table is a Morph4DError naming the file, never a KeyError / JSON traceback
    from morph4d.errors import Morph4DError

    def with_header(text: bytes) -> bytes:
        return raw[:4] + struct.pack("<II", version, len(text)) + text
    broken = {"not_json": with_header(b"{oops"), "no_buffers": with_header(b'{"fps": 25, "camera": {}}'),
              "bad_dtype": with_header(json.dumps({**header, "buffers": {**header["buffers"], "faces": {
                  **header["buffers"]["faces"], "dtype": "complex"}}}).encode()) + raw[12 + length:]}
    for name, data in broken.items():
        (tmp_path / f"{name}.m4da").write_bytes(data)
        with pytest.raises(Morph4DError, match=f"{name}.m4da"):
            read_animated(tmp_path / f"{name}.m4da")


@torch.no_grad()
def test_ply_frame_equals_avatar_world(fitted_avatar, tmp_path):
    avatar = load_avatar(fitted_avatar)
    assert main(["export", str(fitted_avatar), "--animation", "fitted", "--frame", "2",
                 "--out", str(tmp_path / "f2.ply")]) == 0
    g, w = read_ply(tmp_path / "f2.ply"), avatar.world(animation_vertices(avatar, "fitted")[0][2], 2)
    torch.testing.assert_close(g.means, w.means)
    torch.testing.assert_close(g.scales, w.scales, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(g.sh, w.sh)


def test_export_and_view_bad_input_exit_2(fitted_avatar, tmp_path, capsys):
    out = tmp_path / "keep.ply"
    assert main(["export", str(fitted_avatar), "--out", str(out)]) == 0
    before = out.read_bytes()

    def fails(args, message):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err

    # missing avatar folder (export and view)
    fails(["export", str(tmp_path / "none"), "--out", str(out)], "no fitted avatar")
    fails(["view", str(tmp_path / "none"), "--no-browser", "--port", "0"], "no avatar folder")
    # an avatar of another format version
    old = tmp_path / "old"
    old.mkdir()
    save_file(load_file(fitted_avatar / "avatar.safetensors"), str(old / "avatar.safetensors"),
              metadata={"format_version": "99", "head_model": "builtin"})
    fails(["export", str(old), "--out", str(out)], "version 99")
    # an animation made for another head model
    from morph4d.heads import load_head_model
    from morph4d.heads.animation import builtin_animation
    anim = builtin_animation("talk", load_head_model("builtin"), 3)
    anim.head_model = "flame"
    anim.save(tmp_path / "flame_talk.npz")
    fails(["export", str(fitted_avatar), "--animation", str(tmp_path / "flame_talk.npz"), "--out", str(out)],
          "'flame' head model")
    fails(["export", str(fitted_avatar), "--animation", "dance", "--out", str(out)], "neither a built-in")
    # frames outside the animation, wrong output kinds
    fails(["export", str(fitted_avatar), "--frames", "3", "--frame", "3", "--out", str(out)], "outside")
    fails(["export", str(fitted_avatar), "--out", str(tmp_path / "x.png")], ".ply")
    fails(["export", str(fitted_avatar), "--format", "animated", "--out", str(tmp_path / "x.ply")], ".m4da")
    fails(["export", str(fitted_avatar), "--format", "html", "--out", str(out)], "not a folder")
    (tmp_path / "d.ply").mkdir()
    fails(["export", str(fitted_avatar), "--out", str(tmp_path / "d.ply")], "is a folder")
    # nothing was clobbered, and no temporary file was left beside the output
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
