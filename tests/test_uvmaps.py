"""IM-Portrait's UV-coordinate conditioning maps (morph4d.conditioning.uvmaps)."""

import pytest
import torch

from morph4d.cameras import orbit_cameras
from morph4d.conditioning.uvmaps import EYES, MOUTH, UVConditioner, region_codes
from morph4d.heads import load_head_model


@pytest.fixture(scope="module")
def model():
    return load_head_model("builtin")


def test_maps_show_uv_eyes_and_an_open_mouth_apart(model):
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 0.75, 26.0, 64, 64)
    p = model.zero_params((2,))
    p.jaw[1, 0] = 0.35                                     # frame 1: mouth open
    maps = UVConditioner(model).maps(p, cams)
    assert maps.shape == (2, 3, 64, 64) and maps.min() >= -1 and maps.max() <= 1
    assert (maps[:, :, 0, 0] == -1).all()                   # the corner is background: every channel -1
    region = maps[:, 2]
    eyes = (region - EYES).abs() < 0.25
    mouth = (region - MOUTH).abs() < 0.25
    assert eyes[0].sum() > 4 and eyes[1].sum() > 4         # both eyes visible in both frames
    assert mouth[0].sum() == 0 and mouth[1].sum() > 4       # the mouth interior only shows when it opens
    # the eyes lie above the mouth in the image
    rows = torch.arange(64)[:, None].expand(64, 64)
    assert rows[eyes[1]].float().mean() < rows[mouth[1]].float().mean()
    # texture coordinates vary smoothly over the face (not one constant colour)
    face = (maps[0, 2] + 1).abs() < 1e-6
    assert maps[0, 0][face].std() > 0.05 and maps[0, 1][face].std() > 0.05


def test_regions_come_from_the_models_vertex_groups(model):
    code = region_codes(model)
    assert (code[torch.as_tensor(model.vertex_groups["eyes"])] == EYES).all()
    assert (code[torch.as_tensor(model.vertex_groups["mouth_interior"])] == MOUTH).all()
    assert (code == -1).sum() > model.num_vertices // 2


def test_a_model_without_uv_layout_is_refused(model):
    import copy
    bare = copy.copy(model)
    bare.uvs = None
    with pytest.raises(ValueError, match="no UV layout"):
        UVConditioner(bare)
