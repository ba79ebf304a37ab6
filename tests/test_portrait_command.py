"""`morph4d portrait` (morph4d.pipeline.portrait) with a tiny untrained U-Net: every video is written with the
animation's frame count, a finished run is not sampled again, and bad inputs are refused with exit 2."""

import shutil

import numpy as np
import pytest
import torch

from morph4d.cli import main
from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig
from morph4d.video import read_mp4

S = 32


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from morph4d.cameras import VIEW_FOV, VIEW_RADIUS
    from morph4d.data.heldout import held_out_identity
    from morph4d.generation.reference import held_out_reference
    from morph4d.heads import load_head_model
    root = tmp_path_factory.mktemp("portrait_cmd")
    PortraitUNet(PortraitUNetConfig.preset("tiny"), generator=torch.Generator().manual_seed(0)) \
        .save_pretrained(root / "unet")
    head = load_head_model("builtin")
    for res in (S, 2 * S):
        h = held_out_identity(head, 1, 1, res, VIEW_RADIUS, VIEW_FOV)
        held_out_reference(h, head.name).save(root / f"ref{res}.npz")
    return root


def test_portrait_writes_every_video_and_resumes(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["portrait", "--reference", str(inputs / f"ref{S}.npz"), "--model", str(inputs / "unet"), "--out", str(out),
            "--frames", "5", "--clip", "3", "--steps", "1"]
    assert main(argv) == 0
    for name in ("frontal", "side_left", "side_right", "depth"):
        video = read_mp4(out / f"{name}.mp4")
        assert video.shape[:3] == (5, S, S), name
    assert read_mp4(out / "stereo_sbs.mp4").shape[:3] == (5, S, 2 * S)
    clips = sorted((out / "clips").glob("*.safetensors"))
    assert len(clips) == 2
    stamps = [c.stat().st_mtime_ns for c in clips]
    assert main(argv) == 0                                          # finished clips are reused, not sampled again
    assert [c.stat().st_mtime_ns for c in clips] == stamps
    assert main(argv[:-2] + ["--steps", "2"]) == 2                  # other inputs in the same folder: refused
    assert "other inputs" in capsys.readouterr().err
    # inputs are identified by content: the run folder, the reference and the weights moved elsewhere are the same
    # run (nothing sampled again); an edited reference is another
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    shutil.copytree(inputs / "unet", tmp_path / "w" / "unet")
    shutil.copy(inputs / f"ref{S}.npz", tmp_path / "w" / "ref.npz")
    argv2 = ["portrait", "--reference", str(tmp_path / "w" / "ref.npz"), "--model", str(tmp_path / "w" / "unet"),
             "--out", str(moved), "--frames", "5", "--clip", "3", "--steps", "1"]
    assert main(argv2) == 0
    assert [c.stat().st_mtime_ns for c in sorted((moved / "clips").glob("*.safetensors"))] == stamps
    with np.load(tmp_path / "w" / "ref.npz") as z:
        arrays = dict(z)
    key = next(k for k, v in arrays.items() if v.dtype.kind == "f")
    arrays[key] = arrays[key] + 1e-3
    np.savez(tmp_path / "w" / "ref.npz", **arrays)
    assert main(argv2) == 2 and "other inputs" in capsys.readouterr().err


def test_portrait_refuses_wrong_inputs(inputs, tmp_path, capsys):
    base = ["portrait", "--out", str(tmp_path / "bad"), "--frames", "3", "--steps", "1"]
    cases = {"takes 32x32": ["--reference", str(inputs / f"ref{2 * S}.npz"), "--model", str(inputs / "unet")],
             "not an IM-Portrait weights folder": ["--reference", str(inputs / f"ref{S}.npz"), "--model", str(inputs)],
             "side-deg": ["--reference", str(inputs / f"ref{S}.npz"), "--model", str(inputs / "unet"),
                          "--side-deg", "90"]}
    from morph4d.models.mmvdm import MMVDM, MMVDMConfig
    MMVDM(MMVDMConfig(num_layers=1, num_attention_heads=1, attention_head_dim=16, time_embed_dim=16)) \
        .save_pretrained(tmp_path / "mmvdm")
    cases["holds a MMVDM network"] = ["--reference", str(inputs / f"ref{S}.npz"), "--model", str(tmp_path / "mmvdm")]
    for message, argv in cases.items():
        assert main(base + argv) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (message, err)
    assert not (tmp_path / "bad").exists()


def test_a_photo_is_tracked_first_and_bad_driving_inputs_are_refused(inputs, tmp_path, capsys):
    from morph4d.pipeline.demo import PORTRAIT
    out = tmp_path / "photo"
    base = ["portrait", str(PORTRAIT), "--model", str(inputs / "unet"), "--frames", "2", "--steps", "1"]
    assert main([*base, "--out", str(out)]) == 0
    assert (out / "track" / "reference.npz").is_file() and (out / "frontal.mp4").is_file()
    # the photo's own backdrop, inpainted (track/background.png), shows through; --white-background: white
    assert (out / "track" / "background.png").is_file()
    assert main([*base, "--out", str(tmp_path / "white"), "--white-background"]) == 0
    plate, white = (read_mp4(d / "frontal.mp4").astype(float) for d in (out, tmp_path / "white"))
    assert plate.shape[:3] == white.shape[:3] == (2, S, S)
    assert abs(plate - white).mean() > 1.0          # uint8 levels: the untrained net's planes are half transparent
    bad = tmp_path / "bad"
    for argv, message in ((["--reference", str(inputs / f"ref{S}.npz"), str(PORTRAIT)], "exactly one"),
                          ([str(PORTRAIT), "--drive", str(PORTRAIT)], "expected a video file")):
        assert main(["portrait", *argv, "--model", str(inputs / "unet"), "--out", str(bad)]) == 2
        assert message in capsys.readouterr().err
    assert not bad.exists()


def test_portrait_benchmark_reports_frontal_side_and_drift(inputs, tmp_path):
    """`morph4d eval --portrait UNET` on held-out identities (tiny untrained network: the plumbing, every table)."""
    import json
    out = tmp_path / "eval"
    assert main(["eval", "--portrait", str(inputs / "unet"), "--identities", "1", "--clip", "2", "--clips", "2",
                 "--key-steps", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["frontal"]["psnr"] < 100 and 0 < report["side"]["mpi_psnr"] < 100
    assert 0 < report["side"]["lift_psnr"] < 100
    # the two projection baselines: the true geometry (hair too) is closer to the truth than the head mesh alone
    assert report["frontal_projection"]["psnr"] > report["frontal_head_projection"]["psnr"] > 0
    from PIL import Image
    assert Image.open(out / "sheet_900000.png").size[1] > 5 * 32                    # 5 rows of 32 px tiles
    assert set(report["drift"]) == {"scheduled", "constant"}
    assert all(len(d["psnr_per_clip"]) == 2 for d in report["drift"].values())
    assert len(report["rows"]["frontal"]) == 4 and len(report["rows"]["side"]) == 8
    md = (out / "report.md").read_text()
    assert "2D video + depth lifting" in md and "constant 1.5" in md
    assert main(["eval", "--portrait", str(inputs / "unet"), "--synthetic", "--out", str(out)]) == 2

