"""The command line: help lists working commands, the demo writes its outputs, bad input exits 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from morph4d.cli import build_parser, main
from morph4d.pipeline.demo import DemoConfig, run_demo
from morph4d.video import read_mp4


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    commands = {"demo", "conditioning", "generate", "reference", "fit", "model", "data", "train", "train-vae",
                "head", "flame", "animation", "export", "view", "render", "avatar", "quality", "track", "eval",
                "train-mpi", "portrait"}
    for cmd in commands:
        assert cmd in text
    assert set(build_parser()._subparsers._group_actions[0].choices) == commands


def test_demo_writes_video_contact_sheet_and_config(tmp_path):
    from morph4d.models.folder import init_models
    from morph4d.models.portrait_unet import PortraitUNet, PortraitUNetConfig
    model = init_models(tmp_path / "model", "tiny", "tiny")   # untrained: the stage's plumbing, not its quality
    PortraitUNet(PortraitUNetConfig.preset("tiny")).save_pretrained(tmp_path / "unet")       # 32 px, untrained
    cfg = DemoConfig(out=str(tmp_path / "demo"), frames=5, resolution=64, sheet_views=2, sheet_frames=2,
                     sheet_resolution=48, conditioning_resolution=64, avatar_resolution=32, avatar_iterations=3,
                     avatar_model=str(model), avatar_key_steps=1, avatar_other_steps=1,
                     portrait_model=str(tmp_path / "unet"), portrait_frames=3, portrait_steps=1)
    paths = run_demo(cfg, log=lambda *_: None)
    frames = read_mp4(paths["video"])
    assert frames.shape == (5, 64, 64, 3)
    # a head in the middle, white background in the corners
    assert frames[:, 32, 32].mean() < 230 and frames[:, 1, 1].mean() > 245
    from PIL import Image
    sheet = np.asarray(Image.open(paths["contact_sheet"]))
    assert sheet.shape == (2 * 52 + 4, 2 * 52 + 4, 3)
    assert (tmp_path / "demo" / "conditioning" / "channels.png").is_file()
    assert read_mp4(paths["avatar_video"]).shape[0] == 25            # the fitted (generated) sequence
    assert read_mp4(paths["avatar_reanimated"]).shape[0] == 49       # a new animation
    assert paths["avatar_viewer"].endswith("index.html") and (tmp_path / "demo" / "avatar" / "avatar.ply").is_file()
    # the real photograph, tracked then taken through the same pipeline
    assert (tmp_path / "demo" / "photo" / "track" / "reference.npz").is_file()
    assert Path(paths["photo_overlay"]).is_file()
    assert read_mp4(paths["photo_video"]).shape[0] == 25
    # IM-Portrait on both portraits: the talking video, its side views and a stereo pair
    for name in ("photo", "synthetic"):
        assert read_mp4(paths[f"portrait_{name}_frontal"]).shape[:3] == (3, 32, 32)
        assert read_mp4(paths[f"portrait_{name}_side_left"]).shape[:3] == (3, 32, 32)
        assert read_mp4(paths[f"portrait_{name}_stereo_sbs"]).shape[:3] == (3, 32, 64)
    config = json.loads(open(paths["config"]).read())
    assert config["demo"]["frames"] == 5 and "builtin" in config["head_model"]


def test_demo_plays_an_animation_file(tmp_path):
    anim = tmp_path / "surprise.npz"
    assert main(["animation", "export", "surprise", str(anim), "--frames", "5"]) == 0
    assert main(["demo", "--out", str(tmp_path / "d"), "--animation", str(anim), "--res", "32",
                 "--no-avatar", "--no-portrait"]) == 0
    assert not (tmp_path / "d" / "avatar.mp4").exists()
    assert read_mp4(tmp_path / "d" / "orbit.mp4").shape[0] == 5


@pytest.mark.parametrize("argv, message", [
    (["demo", "--frames", "0"], "--frames must be >= 1"),
    (["demo", "--head", "flame"], "--flame-path"),
    (["demo", "--animation", "dance"], "neither a built-in animation"),
    (["demo", "--head", "flame", "--flame-path", "/nonexistent/generic_model.pkl"], "generic_model.pkl"),
    (["flame", "convert", "/nonexistent.pkl", "out.npz"], "not found"),
    (["flame", "convert", "/nonexistent.pkl", "out.txt"], "must be an .npz"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys, tmp_path):
    if argv[0] == "demo":
        argv = argv + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "orbit.mp4").exists()


def test_usage_errors_exit_2_from_the_installed_command():
    r = subprocess.run([sys.executable, "-m", "morph4d.cli", "demo", "--frames", "many"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "invalid int value" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "morph4d.cli", "head", "info"], capture_output=True, text=True)
    assert r.returncode == 0 and "blink_left" in r.stdout


def test_flame_convert_then_demo_and_info_on_flame(tmp_path, capsys):
    """FLAME is a drop-in replacement everywhere the built-in head is used (random FLAME-format file)."""
    import pickle

    from test_flame import N_SMALL, T_SMALL, random_flame_arrays
    pkl = tmp_path / "generic_model.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(random_flame_arrays(N_SMALL, T_SMALL), fh, protocol=2)
    assert main(["flame", "convert", str(pkl), str(tmp_path / "flame.npz")]) == 0
    assert main(["head", "info", "--head", "flame", "--flame-path", str(tmp_path / "flame.npz")]) == 0
    assert "flame: 300 vertices" in capsys.readouterr().out
    assert main(["demo", "--head", "flame", "--flame-path", str(pkl), "--out", str(tmp_path / "d"),
                 "--frames", "3", "--res", "32", "--animation", "head_turn"]) == 0
    assert read_mp4(tmp_path / "d" / "orbit.mp4").shape == (3, 32, 32, 3)
    (tmp_path / "corrupt.pkl").write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict
    assert main(["demo", "--head", "flame", "--flame-path", str(tmp_path / "corrupt.pkl"),
                 "--out", str(tmp_path / "e")]) == 2
    assert "v_template" in capsys.readouterr().err


def test_unwritable_output_is_a_clean_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), "--frames", "3", "--res", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_conditioning_command_writes_the_channel_grids(tmp_path):
    out = tmp_path / "cond"
    assert main(["conditioning", "--animation", "talk", "--view-set", "360", "--frames", "9", "--res", "64",
                 "--out", str(out)]) == 0
    from PIL import Image

    from morph4d.conditioning.maps import NUM_CONDITIONING_CHANNELS
    names = (out / "channels.txt").read_text().splitlines()
    assert len(names) == NUM_CONDITIONING_CHANNELS and names[0].startswith("0\tpose.")
    sheet = np.asarray(Image.open(out / "channels.png"))
    assert sheet.shape[1] > NUM_CONDITIONING_CHANNELS * 24 and Image.open(out / "overview.png").size[0] > 0
    assert main(["conditioning", "--frames", "10", "--out", str(out)]) == 2
    # issue 17 (ours): the projection group, encoded by the embedded default's autoencoder, and its confidence
    assert main(["conditioning", "--view-set", "360", "--frames", "9", "--res", "64", "--out", str(out / "p"),
                 "--reference-projection"]) == 0
    names = (out / "p" / "channels.txt").read_text().splitlines()
    assert len(names) == NUM_CONDITIONING_CHANNELS + 17 and names[-1] == f"{len(names) - 1}\tprojection.confidence"
    cfg = json.loads((out / "p" / "config.json").read_text())
    assert cfg["conditioning"]["reference_projection"] and cfg["overview_columns"][-1] == "projection confidence"
    assert Image.open(out / "p" / "overview.png").size[0] > Image.open(out / "overview.png").size[0]
