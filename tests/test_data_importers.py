"""Importers on tiny fixture folders made here in each dataset's released layout (as the importer
documents it): cameras, images, mattes and fits must come out in our conventions, bad layouts must
fail with errors that name the path."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from morph4d.cameras import Cameras, orbit_cameras
from morph4d.data.cli import main
from morph4d.data.format import open_dataset, select_frames
from morph4d.data.importers import ImportConfig, run_import
from morph4d.data.synth import HEAD_TARGET
from morph4d.heads.animation import Animation, builtin_animation
from morph4d.heads.builtin import load_builtin_head

W, H, FRAMES = 110, 160, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model():
    return load_builtin_head()


def truth_cameras(n: int, width: int = W, height: int = H, azimuths=None) -> Cameras:
    az = torch.tensor(azimuths if azimuths is not None else np.linspace(-60, 60, n), dtype=torch.float64)
    return orbit_cameras(az, torch.full((n,), 5.0, dtype=torch.float64), 1.0, 24.0, width, height, target=HEAD_TARGET)


def save_fits(path: Path, model, frames: int = FRAMES, **extra) -> Animation:
    anim = builtin_animation("talk", model, frames)
    anim.save(path)
    if extra:
        with np.load(path) as d:
            data = {k: d[k] for k in d.files}
        np.savez(path, **data, **extra)
    return anim


def opencv_K(cams: Cameras, calibration_width: int) -> np.ndarray:
    """Our K at the image size -> an OpenCV K (integer pixel centres) at the calibration width."""
    K = cams.K.double().numpy().copy()
    K[:, :2] *= calibration_width / cams.width
    K[:, 0, 2] -= 0.5
    K[:, 1, 2] -= 0.5
    return K


def images_for(n_views: int, n_frames: int, width: int = W, height: int = H, seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n_views, n_frames, height, width, 3), dtype=np.uint8)
    alpha = np.zeros((n_views, n_frames, height, width), np.uint8)
    alpha[..., height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    return rgb, alpha


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None] / 255.0
    return rgb / 255.0 * a + (1 - a)


def check_cameras(seq_cams: Cameras, truth: Cameras) -> None:
    """Same extrinsics and intrinsics, so a known point lands on the same pixel."""
    truth = truth.resized(seq_cams.width, seq_cams.height)
    assert torch.allclose(seq_cams.R, truth.R.float(), atol=1e-5)
    assert torch.allclose(seq_cams.t, truth.t.float(), atol=1e-5)
    assert torch.allclose(seq_cams.K, truth.K.float(), atol=1e-3)
    point = torch.tensor([[0.01, 0.02, 0.03]])
    assert torch.allclose(seq_cams.project(point), truth.project(point).float(), atol=1e-3)


# ---------------------------------------------------------------------------------------------------
# Nersemble
# ---------------------------------------------------------------------------------------------------

def make_nersemble(root: Path, model, c2w_by_mistake: bool = False) -> tuple[Cameras, np.ndarray, np.ndarray]:
    cams = truth_cameras(3)
    serials = ["220700191", "221501007", "222200037"]
    K = opencv_K(cams, 2200)
    w2c = np.tile(np.eye(4), (3, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = cams.R.double().numpy(), cams.t.double().numpy()
    if c2w_by_mistake:
        w2c = np.linalg.inv(w2c)
    params = root / "src" / "camera_params" / "017"
    params.mkdir(parents=True)
    (params / "camera_params.json").write_text(json.dumps(
        {"world_2_cam": {s: w2c[i].tolist() for i, s in enumerate(serials)}, "intrinsics": K[0].tolist()}))
    rgb, alpha = images_for(3, FRAMES)
    for f in range(FRAMES):
        step = root / "src" / "017" / "sequences" / "EXP-1-head" / "timesteps" / f"frame_{f:05d}"
        (step / "images-2x").mkdir(parents=True)
        (step / "alpha_map").mkdir()
        for v, s in enumerate(serials):
            Image.fromarray(rgb[v, f]).save(step / "images-2x" / f"cam_{s}.png")
            Image.fromarray(alpha[v, f]).save(step / "alpha_map" / f"cam_{s}.png")
    (root / "fits").mkdir()
    save_fits(root / "fits" / "017_EXP-1-head.npz", model)
    return cams, rgb, alpha


def test_nersemble_v1(tmp_path, model):
    cams, rgb, alpha = make_nersemble(tmp_path, model)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       max_side=80, progress=False)
    assert run_import("nersemble", cfg, model, log=lambda *_: None) == ["017_EXP-1-head"]
    seq, = open_dataset(tmp_path / "out")
    assert seq.meta["modality"] == "multiview_video" and seq.meta["source"] == "nersemble"
    assert seq.meta["views"] == ["220700191", "221501007", "222200037"] and seq.num_frames == FRAMES
    assert (seq.cameras.width, seq.cameras.height) == (55, 80)
    check_cameras(seq.cameras, cams)
    got, a = seq.read_images([1], [2])
    expected = np.asarray(Image.fromarray((composite(rgb[1, 2], alpha[1, 2]) * 255 + 0.5).astype(np.uint8))
                          .resize((55, 80), Image.Resampling.BOX)) / 255.0
    assert np.abs(got[0, 0].numpy() - expected).mean() < 0.03
    assert a[0, 0, 40, 27] == 1 and a[0, 0, 2, 2] == 0
    fits = builtin_animation("talk", model, FRAMES).params
    assert torch.allclose(seq.params.jaw, fits.jaw)
    # resumable: a second run finds the sequence and skips it
    assert run_import("nersemble", cfg, model, log=lambda *_: None) == []


def test_eval_runs_on_an_imported_sequence_with_its_baselines(tmp_path, model):
    """`morph4d eval` on a dataset a user imported (issue 19): the imported Nersemble sequence is the ground
    truth (its alpha maps are the matte), the reference projection joins a run of the user's (here the truth
    itself); the oracle avatar is not fitted to non-square views, and the report says so."""
    from morph4d.cli import main as morph4d_main
    make_nersemble(tmp_path, model)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       max_side=80, progress=False)
    run_import("nersemble", cfg, model, log=lambda *_: None)
    seq = tmp_path / "out" / "017_EXP-1-head"
    out = tmp_path / "eval"
    assert morph4d_main(["eval", "--truth", str(seq), "--run", f"same={seq}", "--baselines", "--fit-iterations", "1",
                         "--oracle-views", "220700191,221501007", "--metrics", "psnr,l1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"same", "reference projection"}     # 55 x 80 px: the avatar fit needs squares
    assert "square" in report["notes"]["oracle avatar"] and "ORACLE AVATAR: not run" in (out / "report.md").read_text()
    assert report["runs"]["same"]["summary"]["all"]["l1"] == 0.0
    assert report["truth"]["views"] == ["220700191", "221501007", "222200037"] and report["truth"]["frames"] == FRAMES
    assert all(0 < r["summary"]["all"]["psnr"] < 100 for n, r in report["runs"].items() if n != "same")


def test_nersemble_wrong_convention_and_missing_calibration(tmp_path, model):
    make_nersemble(tmp_path, model, c2w_by_mistake=True)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       progress=False)
    with pytest.raises(ValueError, match="the fitted head projects into only [01] of 3 views"):
        run_import("nersemble", cfg, model)
    (tmp_path / "src" / "camera_params" / "017" / "camera_params.json").unlink()
    with pytest.raises(ValueError, match="no camera_params.json.*Expected layout"):
        run_import("nersemble", cfg, model)


def test_nersemble_v2_videos(tmp_path, model):
    from morph4d.video import write_mp4
    cams = truth_cameras(2)
    K = opencv_K(cams, 2200)
    w2c = np.tile(np.eye(4), (2, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = cams.R.double().numpy(), cams.t.double().numpy()
    calib = tmp_path / "src" / "018" / "calibration"
    calib.mkdir(parents=True)
    (calib / "camera_params.json").write_text(json.dumps(
        {"world_2_cam": {"a1": w2c[0].tolist(), "b2": w2c[1].tolist()}, "intrinsics": K[0].tolist()}))
    seq_dir = tmp_path / "src" / "018" / "sequences" / "SEN-01"
    rgb = np.full((2, FRAMES, H, W, 3), 0.3, np.float32)
    for v, s in enumerate(("a1", "b2")):
        write_mp4(seq_dir / "images" / f"cam_{s}.mp4", rgb[v] + 0.1 * v)
    (tmp_path / "fits").mkdir()
    save_fits(tmp_path / "fits" / "018_SEN-01.npz", model)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       progress=False)
    assert run_import("nersemble", cfg, model, log=lambda *_: None) == ["018_SEN-01"]
    seq, = open_dataset(tmp_path / "out")
    check_cameras(seq.cameras, cams)
    got, alpha = seq.read_images([0, 1], [0, 2])
    assert abs(float(got[0].mean()) - 0.3) < 0.03 and abs(float(got[1].mean()) - 0.4) < 0.03
    assert torch.all(alpha == 1)                                   # no alpha_map videos: alpha 1


# ---------------------------------------------------------------------------------------------------
# RenderMe-360
# ---------------------------------------------------------------------------------------------------

def test_renderme360(tmp_path, model):
    h5py = pytest.importorskip("h5py")
    cams = truth_cameras(4, 64, 48, azimuths=[0, 90, 180, -90])
    K = opencv_K(cams, 64)
    c2w = np.tile(np.eye(4), (4, 1, 1))
    c2w[:, :3, :3] = cams.R.double().numpy().transpose(0, 2, 1)
    c2w[:, :3, 3] = cams.centers.double().numpy()
    rgb, alpha = images_for(4, FRAMES, 64, 48)
    (tmp_path / "src").mkdir()
    with h5py.File(tmp_path / "src" / "0026_e_0.smc", "w") as f:
        for v in range(4):
            cam = f.create_group(f"Camera/{v:02d}")
            for fr in range(FRAMES):
                cam.create_dataset(f"color/{fr}", data=np.frombuffer(png_bytes(rgb[v, fr]), np.uint8))
                mask = np.repeat(alpha[v, fr, ..., None], 3, -1)           # stored as a 3-channel image
                cam.create_dataset(f"mask/{fr}", data=np.frombuffer(png_bytes(mask), np.uint8))
            cal = f.create_group(f"Calibration/{v:02d}")
            cal["K"], cal["D"], cal["RT"] = K[v], np.zeros(5), c2w[v]
    (tmp_path / "fits").mkdir()
    save_fits(tmp_path / "fits" / "0026_e_0.npz", model)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       progress=False)
    assert run_import("renderme360", cfg, model, log=lambda *_: None) == ["0026_e_0"]
    seq, = open_dataset(tmp_path / "out")
    assert seq.meta["modality"] == "multiview_360" and seq.meta["views"] == ["cam00", "cam01", "cam02", "cam03"]
    check_cameras(seq.cameras, cams)
    got, a = seq.read_images([2], [1])
    assert np.abs(got[0, 0].numpy() - composite(rgb[2, 1], alpha[2, 1])).max() <= 1 / 255 + 1e-6
    # one multiview_images sequence per frame
    cfg2 = ImportConfig(src=cfg.src, fits=cfg.fits, out=str(tmp_path / "frames"), frames_as_sequences=True,
                        progress=False)
    assert run_import("renderme360", cfg2, model, log=lambda *_: None) == [f"0026_e_0_f{f:05d}" for f in range(FRAMES)]
    last = open_dataset(tmp_path / "frames")[-1]
    assert last.meta["modality"] == "multiview_images" and last.num_frames == 1
    assert torch.allclose(last.params.jaw[0], builtin_animation("talk", model, FRAMES).params.jaw[FRAMES - 1])


# ---------------------------------------------------------------------------------------------------
# Ava-256
# ---------------------------------------------------------------------------------------------------

def test_ava256(tmp_path, model):
    cams = truth_cameras(3, 46, 70, azimuths=[0, 120, -120])
    K = opencv_K(cams, 2668)
    capture = "m--20230405--1635--AAN112--GHS"
    dec = tmp_path / "src" / capture / "decoder"
    (dec / "image").mkdir(parents=True)
    (dec / "segmentation_parts").mkdir()
    krt = []
    for v, cid in enumerate(("400002", "400015", "400029")):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = cams.R[v].double().numpy(), cams.t[v].double().numpy() * 1000.0   # millimetres
        krt.append({"cameraId": cid, "K": K[v].T.tolist(), "T": T.T.tolist(), "distortion": [0, 0, 0, 0]})
    (dec / "camera_calibration.json").write_text(json.dumps({"KRT": krt}))
    rgb, _ = images_for(3, 2, 46, 70)
    labels = np.zeros((70, 46), np.uint8)
    labels[20:50, 10:36] = 2                      # body
    labels[60:, :] = 3                            # chair: not foreground
    for v, cid in enumerate(("400002", "400015", "400029")):
        with zipfile.ZipFile(dec / "image" / f"cam{cid}.zip", "w") as z:
            for i, frame in enumerate((123, 456)):
                buf = io.BytesIO()
                Image.fromarray(rgb[v, i]).save(buf, format="AVIF", quality=95)
                z.writestr(f"{frame:06d}.avif", buf.getvalue())
        seg = dec / "segmentation_parts" / f"cam{cid}"
        seg.mkdir()
        for frame in (123, 456):
            Image.fromarray(labels).save(seg / f"{frame:06d}.png")
    (tmp_path / "fits").mkdir()
    save_fits(tmp_path / "fits" / f"{capture}.npz", model, frames=2, frame_id=np.array([123, 456]))
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       progress=False)
    assert run_import("ava256", cfg, model, log=lambda *_: None) == [f"{capture}_000123", f"{capture}_000456"]
    seqs = open_dataset(tmp_path / "out")
    assert all(s.meta["modality"] == "multiview_images" and s.num_frames == 1 for s in seqs)
    check_cameras(seqs[1].cameras, cams)
    got, a = seqs[1].read_images([0], [0])
    assert a[0, 0, 30, 20] == 1 and a[0, 0, 65, 20] == 0 and a[0, 0, 5, 5] == 0
    assert torch.all(got[0, 0, 65, 20] == 1.0)                      # outside the matte: white
    fits = builtin_animation("talk", model, 2).params
    assert torch.allclose(seqs[1].params.jaw[0], fits.jaw[1])


def test_ava256_needs_frame_ids(tmp_path, model):
    (tmp_path / "src" / "cap" / "decoder").mkdir(parents=True)
    calib = tmp_path / "src" / "cap" / "decoder" / "camera_calibration.json"
    calib.write_text(json.dumps({"KRT": []}))
    (tmp_path / "fits").mkdir()
    save_fits(tmp_path / "fits" / "cap.npz", model)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="camera_calibration.json: 'KRT' must be a non-empty list"):
        run_import("ava256", cfg, model)
    calib.write_text(json.dumps({"KRT": [{"cameraId": "1", "K": np.eye(3).tolist(), "T": np.eye(4).tolist()}]}))
    with pytest.raises(ValueError, match="lacks 'frame_id'"):
        run_import("ava256", cfg, model)


# ---------------------------------------------------------------------------------------------------
# VFHQ
# ---------------------------------------------------------------------------------------------------

def test_vfhq_monocular_with_mattes(tmp_path, model):
    clip = "Clip+G0DGRma_p48+P0+C0+F11208-11383"
    frames_dir = tmp_path / "src" / clip
    frames_dir.mkdir(parents=True)
    rgb, alpha = images_for(1, FRAMES, 64, 64)
    (tmp_path / "mattes" / clip).mkdir(parents=True)
    for f in range(FRAMES):
        Image.fromarray(rgb[0, f]).save(frames_dir / f"{f:08d}.png")
        Image.fromarray(alpha[0, f]).save(tmp_path / "mattes" / clip / f"{f:08d}.png")
    K = np.array([[120.0, 0, 32], [0, 120, 32], [0, 0, 1]])
    name = "Clip_G0DGRma_p48_P0_C0_F11208-11383"
    (tmp_path / "fits").mkdir()
    anim = builtin_animation("talk", model, FRAMES)
    p = anim.params
    params = p.replace(rotation=torch.tensor([0.0, torch.pi, 0.0]).expand(FRAMES, 3),     # facing the camera
                       translation=torch.tensor([0.0, 0.02, 0.7]).expand(FRAMES, 3))
    Animation(params, 25.0, "builtin", "clip").save(tmp_path / "fits" / f"{name}.npz")
    with np.load(tmp_path / "fits" / f"{name}.npz") as d:
        np.savez(tmp_path / "fits" / f"{name}.npz", **{k: d[k] for k in d.files}, K=K)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"),
                       mattes=str(tmp_path / "mattes"), progress=False)
    assert run_import("vfhq", cfg, model, log=lambda *_: None) == [name]
    seq, = open_dataset(tmp_path / "out")
    assert seq.meta["modality"] == "monocular" and seq.num_views == 1
    assert torch.allclose(seq.cameras.K[0], torch.tensor(K, dtype=torch.float32))
    got, a = seq.read_images([0], [1])
    assert np.abs(got[0, 0].numpy() - composite(rgb[0, 1], alpha[0, 1])).max() <= 1 / 255 + 1e-6
    box = seq.boxes[0, 0]
    assert 0 < box[0] + box[2] / 2 < 64 and 0 < box[1] + box[3] / 2 < 64      # crop around the head
    head = model(select_frames(seq.params, 0)).mean(0)
    assert seq.cameras.project(head[None])[0, 0, 2] > 0


def test_fits_must_match_the_frames_and_cli_errors(tmp_path, model, capsys):
    make_nersemble(tmp_path, model)
    save_fits(tmp_path / "fits" / "017_EXP-1-head.npz", model, frames=FRAMES + 2)
    cfg = ImportConfig(src=str(tmp_path / "src"), fits=str(tmp_path / "fits"), out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="has 5 frames of fits, the source has 3 frames"):
        run_import("nersemble", cfg, model)
    args = ["import", "vfhq", "--src", str(tmp_path / "nowhere"), "--fits", str(tmp_path / "fits"),
            "--out", str(tmp_path / "o"), "--head", "builtin"]
    assert main(args) == 2
    assert "vfhq:" in capsys.readouterr().err
    assert main(["import", "nersemble", "--src", str(tmp_path / "src"), "--fits", str(tmp_path / "nofits"),
                 "--out", str(tmp_path / "o"), "--head", "builtin"]) == 2
    assert "fits folder" in capsys.readouterr().err
