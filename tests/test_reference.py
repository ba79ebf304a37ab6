"""The tracked reference image: file format, errors, canonicalisation of the head pose into the camera."""

import numpy as np
import pytest
import torch

from morph4d.cameras import orbit_cameras
from morph4d.heads.builtin import load_builtin_head
from morph4d.reference import Reference, canonicalize, load_reference, view_angles


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
