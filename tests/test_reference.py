"""The tracked reference image: file format, errors, canonicalisation of the head pose into the camera."""

import numpy as np
import pytest
import torch

from morph4d.cameras import orbit_cameras
from morph4d.generation.reference import Reference, canonicalize, load_reference, view_angles
from morph4d.heads.builtin import load_builtin_head


@pytest.fixture(scope="module")
def head():
    return load_builtin_head()


def make_ref(head, rotation=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)):
    p = head.zero_params()
    p.rotation, p.translation = torch.tensor(rotation), torch.tensor(translation)
    p.expression[0] = 0.5
    cam = orbit_cameras(torch.tensor([20.0]), torch.tensor([5.0]), 0.7, 25.0, 64, 48)
    return Reference(torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0)), p, cam, "builtin")


def test_round_trip(head, tmp_path):
    ref = make_ref(head, (0.1, 0.2, 0.0), (0.01, 0.0, 0.02))
    ref.save(tmp_path / "r.npz")
    back = load_reference(tmp_path / "r.npz", head)
    assert torch.allclose(back.image, ref.image) and torch.equal(back.camera.K, ref.camera.K)
    assert torch.equal(back.params.rotation, ref.params.rotation) and back.camera.width == 64


def test_canonicalize_keeps_the_picture(head):
    ref = make_ref(head, (0.2, -0.5, 0.1), (0.02, -0.01, 0.03))
    can = canonicalize(ref, head)
    assert can.params.rotation.abs().max() == 0 and can.params.translation.abs().max() == 0
    before = ref.camera.project(head(ref.params)[None])
    after = can.camera.project(head(can.params)[None])
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)  # same pixels, same depths
    az, el = view_angles(make_ref(head).camera)
    assert az == pytest.approx(20.0, abs=1e-3) and el == pytest.approx(5.0, abs=1e-3)


def test_bad_references(head, tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="without tracking"):
        load_reference(tmp_path / "photo.png", head)
    np.savez(tmp_path / "untracked.npz", image=np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="no tracking"):
        load_reference(tmp_path / "untracked.npz", head)
    with pytest.raises(FileNotFoundError):
        load_reference(tmp_path / "missing.npz", head)
    ref = make_ref(head)
    ref.head_model = "flame"
    ref.save(tmp_path / "flame.npz")
    with pytest.raises(ValueError, match="'flame' head model"):
        load_reference(tmp_path / "flame.npz", head)


def test_reference_from_a_synthetic_sequence_drives_generate(head, tmp_path, capsys):
    """A dataset frame becomes a tracked reference (head crop + cropped camera); the head model projects
    onto the head in the crop, and `morph4d generate` accepts it."""
    from morph4d.cli import main
    from morph4d.data.synth import SynthConfig, synthesize
    names = synthesize(SynthConfig(out=str(tmp_path / "ds"), identities=1, views=2, frames=5, resolution=48,
                                   progress=False), head, log=lambda *_: None)
    seq = tmp_path / "ds" / names[0]
    assert main(["reference", "--sequence", str(seq), "--view", "1", "--frame", "2", "--res", "32",
                 "--out", str(tmp_path / "ref.npz")]) == 0
    ref = load_reference(tmp_path / "ref.npz", head)
    assert ref.image.shape == (3, 32, 32) and ref.camera.width == 32
    uv = ref.camera.project(head(ref.params)[None])[0, :, :2]
    centre = uv.mean(0)
    assert ((centre > 8) & (centre < 24)).all()  # the head sits in the middle of its crop
    dark = ref.image.mean(0) < 0.9  # non-white pixels (the person) around the projected head centre
    ys, xs = torch.nonzero(dark, as_tuple=True)
    assert abs(xs.float().mean() - centre[0]) < 4 and abs(ys.float().mean() - centre[1]) < 6
    assert main(["model", "init", "--out", str(tmp_path / "m"), "--mmvdm", "tiny", "--vae", "tiny"]) == 0
    assert main(["generate", "--reference", str(tmp_path / "ref.npz"), "--model", str(tmp_path / "m"),
                 "--key-steps", "1", "--other-steps", "1", "--out", str(tmp_path / "gen")]) == 0
    assert (tmp_path / "gen" / "manifest.json").is_file()
    assert main(["reference", "--sequence", str(seq), "--view", "5", "--out", str(tmp_path / "r.npz")]) == 2
    assert "2 views" in capsys.readouterr().err
