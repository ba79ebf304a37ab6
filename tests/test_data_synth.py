"""Synthetic data: identities, rendering, the dataset format, the synth command, resumption after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from morph4d.data.cli import main
from morph4d.data.format import (
    SequenceWriter,
    finished_sequences,
    open_dataset,
    read_index,
    read_sequence,
    remove_partials,
    write_index,
)
from morph4d.data.identity import EVAL_SEEDS, Extras, IdentityConfig, sample_appearance, sample_identity
from morph4d.data.scene import Lighting, make_scene, pose_extras, render_sequence
from morph4d.data.synth import (
    SynthConfig,
    camera_rig,
    head_crops,
    make_sequence,
    random_animation,
    sequence_name,
    synthesize,
)
from morph4d.heads.builtin import load_builtin_head

TINY = dict(modality="multiview_video", views=2, frames=5, resolution=32, progress=False)


@pytest.fixture(scope="module")
def model():
    return load_builtin_head()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_identity_is_a_function_of_its_seed_at_any_texture_size(model):
    a = sample_identity(7, model, IdentityConfig(texture_size=128))
    b = sample_identity(7, model, IdentityConfig(texture_size=128))
    c = sample_identity(7, model, IdentityConfig(texture_size=256))
    assert a.appearance == b.appearance == c.appearance
    assert torch.equal(a.texture, b.texture) and a.texture.shape == (5, 256, 128)
    assert torch.equal(a.shape, c.shape) and torch.equal(a.extras.vertices, c.extras.vertices)
    assert torch.equal(a.extras.faces, b.extras.faces)
    assert a.texture.min() >= 0 and a.texture[:3].max() <= 1


def test_identities_vary(model):
    people = [sample_appearance(torch.Generator().manual_seed(s)) for s in range(24)]
    assert len({p.hair_style for p in people}) >= 4
    assert len({p.hair_color for p in people}) >= 4
    tones = [p.skin_tone for p in people]
    assert max(tones) - min(tones) > 0.6
    assert any(p.glasses != "none" for p in people) and any(p.beard != "none" for p in people)


def test_extras_at_head_vertices_follow_the_head_exactly(model):
    """An extra vertex sitting on a head vertex, with its weights and anchor, poses onto it."""
    ident = sample_identity(3, model, IdentityConfig(texture_size=64))
    idx = torch.tensor([0, 500, 5000, 12000, int(model.vertex_groups["lips"][3])])
    rest = model.neutral(ident.shape)
    ident.extras = Extras(rest[idx], torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2),
                          torch.zeros(0, 3, dtype=torch.long), model.skin_weights[idx], idx,
                          torch.zeros(0, dtype=torch.long))
    g = torch.Generator().manual_seed(0)
    params, _ = random_animation(model, 5, 25.0, g)
    params = params.replace(shape=ident.shape, expression=params.expression + 0.5,
                            rotation=torch.full((5, 3), 0.2), translation=torch.full((5, 3), 0.03))
    with torch.no_grad():
        expected = model(params)[:, idx]
        got = pose_extras(model, params, ident)
    assert torch.allclose(got, expected, atol=1e-5)


def test_render_has_white_background_and_a_matte(model):
    ident = sample_identity(1, model, IdentityConfig(texture_size=128))
    scene = make_scene(model, ident, 32)
    g = torch.Generator().manual_seed(1)
    cams, _ = camera_rig("multiview_video", 2, 32, g)
    params = model.zero_params((2,)).replace(shape=ident.shape)
    images, alpha = render_sequence(scene, params, cams, Lighting())
    assert images.shape == (2, 2, 32, 32, 3) and alpha.shape == (2, 2, 32, 32)
    assert torch.all(images[:, :, 0, 0] == 1.0) and torch.all(alpha[:, :, 0, 0] == 0)
    assert torch.all(alpha[:, :, 16, 16] == 1.0) and images[:, :, 16, 16].mean() < 0.95
    assert ((alpha > 0) & (alpha < 1)).any()                       # anti-aliased edges
    assert images.min() >= 0 and images.max() <= 1


def test_camera_rigs_frame_the_head(model):
    params = model.zero_params((1,))
    for modality, views in (("monocular", 1), ("multiview_video", 8), ("multiview_images", 12), ("multiview_360", 12)):
        cams, names = camera_rig(modality, views, 64, torch.Generator().manual_seed(2))
        assert len(cams) == views == len(names)
        boxes = head_crops(model, params, cams, 0.0)[:, 0]          # (V, 4)
        centre = boxes[:, :2] + boxes[:, 2:] / 2
        assert torch.all((centre > 16) & (centre < 48)), modality   # head in the middle of the image
        assert torch.all((boxes[:, 2] > 40) & (boxes[:, 2] < 90)), modality
    cams, _ = camera_rig("multiview_360", 24, 64, torch.Generator().manual_seed(3))
    dirs = torch.nn.functional.normalize(cams.centers, dim=-1)
    assert dirs[:, 2].min() < -0.5 and dirs[:, 1].max() > 0.8      # views from behind and from the top


def test_random_animation_is_smooth_and_deterministic(model):
    a, _ = random_animation(model, 25, 25.0, torch.Generator().manual_seed(4))
    b, _ = random_animation(model, 25, 25.0, torch.Generator().manual_seed(4))
    assert torch.equal(a.expression, b.expression) and torch.equal(a.neck, b.neck)
    step = (a.neck[1:] - a.neck[:-1]).abs().max()
    assert step < 0.08 and a.neck.abs().max() > 0.01                # moves, without jumps (rad per frame)
    single, _ = random_animation(model, 1, 25.0, torch.Generator().manual_seed(4))
    assert single.jaw.shape == (1, 3)


def test_held_out_seeds_are_refused_for_training():
    with pytest.raises(ValueError, match="held-out"):
        SynthConfig(identities=3, first_seed=EVAL_SEEDS.start - 1).resolved().check()
    with pytest.raises(ValueError, match="split eval uses only"):
        SynthConfig(identities=3, split="eval", first_seed=0).resolved().check()
    cfg = SynthConfig(identities=100, split="eval").resolved()
    cfg.check()
    assert cfg.first_seed == 900000


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown modality 'foo'"):
        SynthConfig(modality="foo").resolved()
    with pytest.raises(ValueError, match="monocular has exactly 1 view"):
        SynthConfig(modality="monocular", views=2).resolved().check()
    with pytest.raises(ValueError, match="multiview_images has 1 frame"):
        SynthConfig(modality="multiview_images", frames=5).resolved().check()


def _load_all(root: Path) -> dict:
    """Everything of a dataset folder as arrays (npz contents, decoded images, JSON)."""
    out = {"dataset.json": json.loads((root / "dataset.json").read_text())}
    for seq in finished_sequences(root):
        for f in sorted((root / seq).rglob("*")):
            key = str(f.relative_to(root))
            if f.suffix == ".npz":
                with np.load(f) as d:
                    out.update({f"{key}:{k}": d[k] for k in d.files})
            elif f.suffix == ".png":
                from PIL import Image
                out[key] = np.asarray(Image.open(f))
            elif f.suffix == ".json":
                out[key] = json.loads(f.read_text())
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_synth_is_deterministic_and_round_trips(tmp_path, model):
    cfg = SynthConfig(out=str(tmp_path / "a"), identities=2, **TINY)
    assert synthesize(cfg, model, log=lambda *_: None) == ["id000000_00", "id000001_00"]
    synthesize(SynthConfig(out=str(tmp_path / "b"), identities=2, **TINY), model, log=lambda *_: None)
    _assert_same(_load_all(tmp_path / "a"), _load_all(tmp_path / "b"))
    # round trip: what make_sequence rendered is what the format gives back
    seq = make_sequence(model, cfg.resolved(), 1, 0)
    disk = read_sequence(tmp_path / "a" / "id000001_00", check_images=True)
    assert disk.meta["identity_seed"] == 1 and disk.meta["modality"] == "multiview_video"
    assert torch.equal(disk.cameras.R, seq.cameras.R) and torch.equal(disk.cameras.K, seq.cameras.K)
    assert torch.equal(disk.params.expression, seq.params.expression) and torch.equal(disk.boxes, seq.boxes)
    rgb, alpha = disk.read_images([0, 1], [0, 4])
    assert (rgb - seq.images[:, [0, 4]]).abs().max() <= 0.5 / 255 + 1e-6
    assert (alpha - seq.alpha[:, [0, 4]]).abs().max() <= 0.5 / 255 + 1e-6
    assert [s.name for s in open_dataset(tmp_path / "a")] == ["id000000_00", "id000001_00"]


def test_killed_run_resumes_to_the_same_dataset(tmp_path, model):
    """SIGKILL the synth command after its first finished sequence, rerun, compare with an uninterrupted run."""
    out = tmp_path / "killed"
    args = ["synth", "--out", str(out), "--identities", "8", "--views", "2", "--frames", "5", "--res", "32",
            "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "morph4d.data.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not finished_sequences(out) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    visible = finished_sequences(out)
    assert 1 <= len(visible) < 8, visible
    for name in visible:                                    # whatever is visible is complete
        read_sequence(out / name, check_images=True)
    first = out / visible[0] / "meta.json"
    stamp = first.stat().st_mtime_ns
    assert main(args) == 0
    assert first.stat().st_mtime_ns == stamp                # finished sequences were skipped, not redone
    assert finished_sequences(out) == [sequence_name(s, 0) for s in range(8)]
    assert not [p for p in out.iterdir() if p.name.startswith(".") and "partial" in p.name]
    synthesize(SynthConfig(out=str(tmp_path / "whole"), identities=8, views=2, frames=5, resolution=32,
                           progress=False), model, log=lambda *_: None)
    _assert_same(_load_all(out), _load_all(tmp_path / "whole"))


def test_interrupted_writer_leaves_nothing_visible(tmp_path):
    from morph4d.cameras import orbit_cameras
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 1.0, 20, 8, 8)
    with pytest.raises(RuntimeError):
        with SequenceWriter(tmp_path, "seq", ["cam00"], 2, 8, 8) as w:
            w.write_frame(0, 0, torch.ones(8, 8, 3), torch.ones(8, 8))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [] and finished_sequences(tmp_path) == []
    w = SequenceWriter(tmp_path, "seq", ["cam00"], 2, 8, 8)  # a crash without cleanup: hidden partial folder
    w.write_frame(0, 0, torch.ones(8, 8, 3), torch.ones(8, 8))
    assert finished_sequences(tmp_path) == [] and len(remove_partials(tmp_path)) == 1
    with pytest.raises(ValueError, match="view cam00 frame 1 was never written"):
        w2 = SequenceWriter(tmp_path, "seq", ["cam00"], 2, 8, 8)
        w2.write_frame(0, 0, torch.ones(8, 8, 3), torch.ones(8, 8))
        w2.finish({"modality": "monocular", "head_model": "builtin", "fps": 25}, cams,
                  load_builtin_head().zero_params((2,)), torch.zeros(1, 2, 4), 1.25, 0.0)


def test_bad_dataset_folders_are_named(tmp_path, model):
    with pytest.raises(ValueError, match="does not exist"):
        read_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="dataset.json is missing"):
        open_dataset(tmp_path / "empty")
    root = tmp_path / "ds"
    synthesize(SynthConfig(out=str(root), identities=1, **TINY), model, log=lambda *_: None)
    meta = root / "id000000_00" / "meta.json"
    meta.write_text(meta.read_text().replace('"version": 1', '"version": 7'))
    with pytest.raises(ValueError, match="sequence 'id000000_00': format version 7"):
        open_dataset(root)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="sequence 'id000000_00': meta.json is not valid JSON"):
        open_dataset(root)
    with pytest.raises(ValueError, match="sequence 'id000000_00': meta.json is not valid JSON"):
        write_index(root, {})
    (root / "dataset.json").write_text(json.dumps({"format": "morph4d-dataset", "version": 1,
                                                   "sequences": ["ghost"]}))
    with pytest.raises(ValueError, match="sequence 'ghost'"):
        open_dataset(root)
    shutil.rmtree(root / "id000000_00")
    write_index(root, {})
    assert read_index(root)["sequences"] == []


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--identities", "2", "--first-seed", "899999",
                 "--no-progress"]) == 2
    assert "error: seeds 900000..900000 are held-out" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "y"), "--modality", "monocular", "--views", "3"]) == 2
    assert "error: modality monocular has exactly 1 view" in capsys.readouterr().err
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "stuff.txt").write_text("x")
    assert main(["data", "synth", "--out", str(tmp_path / "z"), "--identities", "1", "--res", "32"]) == 2
    assert "non-empty folder without dataset.json" in capsys.readouterr().err
