"""Importers: the public datasets of MVP4D's curriculum (§3.3, S2.2) from their released layouts into the
morph4d dataset format (``format.py``), given the user's copy and per-frame fits of a head model.

We cannot see the real datasets; each importer states the layout it assumes (``Importer.expects``,
also in docs/DATA.md), checks it, and stops with an error naming the path and what it expected when the
copy differs. After conversion every sequence is sanity-checked: the fitted head must project inside
the images of at least half of the views, which catches a wrong extrinsics convention, wrong units or
fits in another frame.

Common to all importers:
- **Fits** (the dataset's FLAME tracking, MVP4D S2.2): one ``FITS/SEQUENCE.npz`` per output sequence, in
  the animation format of ``morph4d.heads.animation`` (FLAME key names accepted: ``expr``, ``jaw_pose``,
  ``neck_pose``, ``global_orient``, ``transl``, ``leye_pose``/``reye_pose``, ``betas``), one row per
  source frame in order, in the dataset's world frame in metres (after ``world_scale``).
- **Cameras** become OpenCV world-to-camera with pixel intrinsics and pixel centres at +0.5
  (CONVENTIONS.md): the datasets' OpenCV calibrations put pixel centres at integers, so 0.5 is added to
  cx, cy at the calibration resolution, then K is scaled to the stored images. Lens distortion is
  ignored (the images are not undistorted).
- **Images** are downscaled to ``max_side``, composited over white with the dataset's matte (MVP4D
  matts to white, S2.2) and stored as RGBA PNG with the matte as alpha (alpha 1 where there is none).
- **Crops** (MVP4D S2.1) come from the fitted head's vertices projected into each view.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from morph4d.cameras import Cameras
from morph4d.data.format import SequenceWriter, finished_sequences, remove_partials, select_frames, write_index
from morph4d.data.synth import CROP_SCALE, head_crops
from morph4d.errors import Morph4DError
from morph4d.heads import HeadModel
from morph4d.heads.animation import load_animation
from morph4d.validate import IMAGE_ERRORS, check_image_size, check_intrinsics, open_image, read_npz

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".avif", ".webp")


@dataclass(frozen=True)
class ImportConfig:
    src: str
    fits: str
    out: str
    max_side: int = 1024                 # longer image side after downscaling (never upscaled)
    max_frames: int | None = None        # at most this many frames per sequence (after ``stride``)
    stride: int = 1                      # every n-th source frame
    world_scale: float | None = None     # metres per calibration unit (None: the importer's default)
    calibration_width: int | None = None  # image width the intrinsics refer to (None: importer default)
    mattes: str | None = None            # vfhq only: CLIP/FRAME.png alpha mattes
    frames_as_sequences: bool = False    # renderme360: one multiview_images sequence per frame
    fps: float | None = None             # None: the dataset's rate
    crop_smooth_sigma: float = 2.0
    progress: bool = True

    def __post_init__(self):
        if self.max_side < 16 or self.stride < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise Morph4DError("--max-side must be >= 16, --stride >= 1 and --max-frames >= 1")
        if self.world_scale is not None and self.world_scale <= 0:
            raise Morph4DError(f"--world-scale must be > 0, got {self.world_scale}")


@dataclass
class Source:
    """One output sequence found in the user's copy, before conversion.

    cameras: at the source image size, in our convention (world units already scaled to metres)
    frames: source frame keys in time order; fit_rows: the row of the fits file for each of them;
    fit_total: how many rows the fits file must have (None: any, when rows are named by ``frame_id``)
    read_view(view, keys) yields (key, rgb uint8 (H, W, 3), alpha uint8 (H, W) or None) for those keys
    """
    name: str
    views: list[str]
    cameras: Cameras
    frames: list
    fit_rows: list[int]
    fit_total: int | None
    read_view: Callable[[int, list], Iterator[tuple]]
    modality: str
    fps: float
    fit_name: str
    info: dict = field(default_factory=dict)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("._") or "sequence"


def _layout_error(dataset: str, path: Path, problem: str) -> Morph4DError:
    return Morph4DError(f"{dataset}: {path}: {problem}. Expected layout:\n{IMPORTERS[dataset].expects}")


def _opencv_cameras(R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int, world_scale: float,
                    calibration_width: int | None) -> Cameras:
    """OpenCV calibration (integer pixel centres, intrinsics at ``calibration_width``) -> our Cameras at
    width x height: +0.5 on the principal point, then K scaled by width / calibration_width."""
    K = np.array(K, dtype=np.float64)
    K[:, 0, 2] += 0.5
    K[:, 1, 2] += 0.5
    cal_w = calibration_width or width
    s = width / cal_w
    K[:, :2] *= s
    if K[:, 0, 2].min() < 0.2 * width or K[:, 0, 2].max() > 0.8 * width:
        raise Morph4DError(f"the intrinsics do not fit {width}x{height} images (principal point x from "
                           f"{K[:, 0, 2].min():.0f} to {K[:, 0, 2].max():.0f} after scaling from a calibration width of "
                           f"{cal_w}); pass --calibration-width with the width the calibration was made at")
    f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).float()  # noqa: E731
    return Cameras(f(R), f(np.asarray(t) * world_scale), f(K), width, height)


def _open(data: bytes | Path) -> Image.Image:
    """A source image opened header-first: unreadable, or over ``validate.max_pixels()``, is refused by name."""
    if isinstance(data, Path):
        return open_image(data, f"source image {data}")
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # our limit applies, from the header
    try:
        im = Image.open(io.BytesIO(data))
    except IMAGE_ERRORS as e:
        raise Morph4DError(f"a source image is not readable ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    check_image_size(*im.size, "a source image")
    return im


def _image_size(data: bytes | Path) -> tuple[int, int]:
    with _open(data) as im:
        return im.size


def _decode(data: bytes | Path, mode: str) -> np.ndarray:
    with _open(data) as im:
        try:
            return np.asarray(im.convert(mode))
        except IMAGE_ERRORS as e:
            raise Morph4DError(f"source image {data if isinstance(data, Path) else ''} is not readable ({e})") from None


# ---------------------------------------------------------------------------------------------------
# Nersemble (Kirschstein et al. 2023)
# ---------------------------------------------------------------------------------------------------

NERSEMBLE_EXPECTS = """\
  SRC/camera_params/PID/camera_params.json  (v1)  or  SRC/PID/calibration/camera_params.json  (v2)
      {"world_2_cam": {SERIAL: 4x4 OpenCV world-to-camera}, "intrinsics": 3x3 (shared) or {SERIAL: 3x3}}
      intrinsics at the full 2200 px wide sensor (--calibration-width to change), world in metres
  v1 frames: SRC/PID/sequences/SEQ/timesteps/frame_NNNNN/images-2x/cam_SERIAL.jpg (or images/, images-4x/)
             optional mattes .../frame_NNNNN/alpha_map/cam_SERIAL.png
  v2 videos: SRC/PID/sequences/SEQ/images/cam_SERIAL.mp4, optional SRC/PID/sequences/SEQ/alpha_map/cam_SERIAL.mp4
  fits: FITS/PID_SEQ.npz, one row per timestep; output: one multiview_video sequence PID_SEQ per sequence"""


def _nersemble_calibration(src: Path, pid: str) -> tuple[dict, dict]:
    for path in (src / "camera_params" / pid / "camera_params.json", src / pid / "calibration" / "camera_params.json"):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise _layout_error("nersemble", path, f"not valid JSON ({e})") from None
            if "world_2_cam" not in data or "intrinsics" not in data:
                raise _layout_error("nersemble", path, "lacks 'world_2_cam' or 'intrinsics'")
            w2c = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["world_2_cam"].items()}
            K = data["intrinsics"]
            Ks = ({str(k): np.asarray(v, dtype=np.float64) for k, v in K.items()} if isinstance(K, dict)
                  else {k: np.asarray(K, dtype=np.float64) for k in w2c})
            for serial in w2c:
                if w2c[serial].shape != (4, 4) or Ks.get(serial, np.zeros(0)).shape != (3, 3):
                    raise _layout_error("nersemble", path, f"camera {serial}: world_2_cam must be 4x4 and "
                                        f"intrinsics 3x3")
            return w2c, Ks
    raise _layout_error("nersemble", src / pid,
                        "no camera_params.json (looked in camera_params/PID/ and PID/calibration/)")


def discover_nersemble(cfg: ImportConfig) -> list[Source]:
    src = Path(cfg.src)
    pids = sorted(p.name for p in src.iterdir() if p.is_dir() and (p / "sequences").is_dir()) if src.is_dir() else []
    if not pids:
        raise _layout_error("nersemble", src, "no participant folder PID/sequences/ found")
    sources = []
    for pid in pids:
        w2c, Ks = _nersemble_calibration(src, pid)
        for seq_dir in sorted(p for p in (src / pid / "sequences").iterdir() if p.is_dir()):
            name = _sanitize(f"{pid}_{seq_dir.name}")
            if (seq_dir / "timesteps").is_dir():
                serials, frames, read_view, (W, H) = _nersemble_v1(seq_dir)
            elif (seq_dir / "images").is_dir():
                serials, frames, read_view, (W, H) = _nersemble_v2(seq_dir)
            else:
                raise _layout_error("nersemble", seq_dir, "neither timesteps/ (v1) nor images/ (v2)")
            unknown = [s for s in serials if s not in w2c]
            if unknown:
                raise _layout_error("nersemble", seq_dir, f"cameras {unknown} have no calibration")
            R = np.stack([w2c[s][:3, :3] for s in serials])
            t = np.stack([w2c[s][:3, 3] for s in serials])
            cams = _opencv_cameras(R, t, np.stack([Ks[s] for s in serials]), W, H, cfg.world_scale or 1.0,
                                   cfg.calibration_width or 2200)
            sources.append(Source(name, [_sanitize(s) for s in serials], cams, frames, list(range(len(frames))),
                                  len(frames), read_view, "multiview_video", cfg.fps or 24.0, name,
                                  info={"participant": pid, "sequence": seq_dir.name}))
    return sources


def _nersemble_v1(seq_dir: Path):
    """v1: timesteps/frame_NNNNN/images-2x/cam_SERIAL.jpg (+ alpha_map/cam_SERIAL.png)."""
    frames = sorted(p for p in (seq_dir / "timesteps").iterdir() if p.name.startswith("frame_"))
    if not frames:
        raise _layout_error("nersemble", seq_dir / "timesteps", "no frame_NNNNN folders")
    folder = next((f for f in ("images-2x", "images", "images-4x") if (frames[0] / f).is_dir()), None)
    if folder is None:
        raise _layout_error("nersemble", frames[0], "no images-2x/, images/ or images-4x/ folder")
    files = {p.stem[4:]: p.name for p in (frames[0] / folder).iterdir()
             if p.name.startswith("cam_") and p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise _layout_error("nersemble", frames[0] / folder, "no cam_SERIAL images")
    serials = sorted(files)

    def read_view(v, keys):
        for key in keys:
            img = key / folder / files[serials[v]]
            if not img.is_file():
                raise _layout_error("nersemble", img, "missing image")
            matte = key / "alpha_map" / f"cam_{serials[v]}.png"
            yield key, _decode(img, "RGB"), _decode(matte, "L") if matte.is_file() else None
    return serials, frames, read_view, _image_size(frames[0] / folder / files[serials[0]])


def _nersemble_v2(seq_dir: Path):
    """v2: images/cam_SERIAL.mp4 (+ alpha_map/cam_SERIAL.mp4); frames are video frame indices."""
    serials = sorted(p.stem[4:] for p in (seq_dir / "images").iterdir()
                     if p.name.startswith("cam_") and p.suffix == ".mp4")
    if not serials:
        raise _layout_error("nersemble", seq_dir / "images", "no cam_SERIAL.mp4 videos")
    frames = list(range(_video_length(seq_dir / "images" / f"cam_{serials[0]}.mp4")))

    def read_view(v, keys):
        wanted = set(keys)
        mattes = seq_dir / "alpha_map" / f"cam_{serials[v]}.mp4"
        alpha_iter = _video_frames(mattes, wanted) if mattes.is_file() else None
        for key, rgb in _video_frames(seq_dir / "images" / f"cam_{serials[v]}.mp4", wanted):
            yield key, rgb, next(alpha_iter)[1][..., 0] if alpha_iter is not None else None
    return serials, frames, read_view, _video_size(seq_dir / "images" / f"cam_{serials[0]}.mp4")


def _video_length(path: Path) -> int:
    import av
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _video_size(path: Path) -> tuple[int, int]:
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height


def _video_frames(path: Path, wanted: set) -> Iterator[tuple[int, np.ndarray]]:
    import av
    with av.open(str(path)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k in wanted:
                yield k, frame.to_ndarray(format="rgb24")


# ---------------------------------------------------------------------------------------------------
# RenderMe-360 (Pan et al. 2024)
# ---------------------------------------------------------------------------------------------------

RENDERME_EXPECTS = """\
  SRC/ACTOR_PART.smc (HDF5, the official SMC files; optional annotations in SRC/ACTOR_PART_anno.smc)
      Calibration/CAM/{K 3x3, D, RT 4x4 camera-to-world, OpenCV axes, metres}  (in either file)
      Camera/CAM/color/FRAME: encoded image bytes (JPEG/PNG); Camera/CAM/mask/FRAME: optional matte bytes
  needs h5py (pip install h5py)
  fits: FITS/ACTOR_PART.npz, one row per frame (frames sorted by number)
  output: one multiview_360 sequence ACTOR_PART, or with --frames-as-sequences one multiview_images
  sequence ACTOR_PART_fNNNNN per frame"""


def discover_renderme360(cfg: ImportConfig) -> list[Source]:
    try:
        import h5py
    except ImportError:
        raise Morph4DError("renderme360: reading .smc files needs h5py; install it with `pip install h5py`") from None
    src = Path(cfg.src)
    files = sorted(p for p in src.glob("*.smc") if not p.stem.endswith("_anno")) if src.is_dir() else []
    if not files:
        raise _layout_error("renderme360", src, "no ACTOR_PART.smc files")
    sources = []
    for path in files:
        anno = path.with_name(f"{path.stem}_anno.smc")
        with h5py.File(path, "r") as f:
            if "Camera" not in f:
                raise _layout_error("renderme360", path, "no 'Camera' group")
            cams = sorted(f["Camera"].keys())
            calib_file = path if "Calibration" in f else anno if anno.is_file() else None
            has_color = bool(cams) and "color" in f["Camera"][cams[0]]
            frames = sorted(f["Camera"][cams[0]]["color"].keys(), key=int) if has_color else []
            if not frames:
                raise _layout_error("renderme360", path, f"camera {cams[0] if cams else '?'} has no color frames")
            W, H = _image_size(bytes(np.asarray(f["Camera"][cams[0]]["color"][frames[0]][()]).tobytes()))
        if calib_file is None:
            raise _layout_error("renderme360", path, "no 'Calibration' group here or in ACTOR_PART_anno.smc")
        with h5py.File(calib_file, "r") as f:
            if "Calibration" not in f:
                raise _layout_error("renderme360", calib_file, "no 'Calibration' group")
            missing = [c for c in cams if c not in f["Calibration"]]
            if missing:
                raise _layout_error("renderme360", calib_file, f"cameras {missing} have no calibration")
            c2w = np.stack([np.asarray(f["Calibration"][c]["RT"][()], dtype=np.float64) for c in cams])
            K = np.stack([np.asarray(f["Calibration"][c]["K"][()], dtype=np.float64) for c in cams])
        if c2w.shape[1:] != (4, 4) or K.shape[1:] != (3, 3):
            raise _layout_error("renderme360", calib_file,
                                f"RT must be 4x4 and K 3x3, got {c2w.shape[1:]} and {K.shape[1:]}")
        w2c = np.linalg.inv(c2w)
        cameras = _opencv_cameras(w2c[:, :3, :3], w2c[:, :3, 3], K, W, H, cfg.world_scale or 1.0,
                                  cfg.calibration_width)

        def read_view(v, keys, path=path, cams=cams):
            with h5py.File(path, "r") as f:
                group = f["Camera"][cams[v]]
                for key in keys:
                    if "color" not in group or key not in group["color"]:
                        raise _layout_error("renderme360", path, f"Camera/{cams[v]}/color/{key} is missing")
                    rgb = _decode(np.asarray(group["color"][key][()]).tobytes(), "RGB")
                    alpha = (_decode(np.asarray(group["mask"][key][()]).tobytes(), "RGB").max(-1)
                             if "mask" in group and key in group["mask"] else None)
                    yield key, rgb, alpha
        name = _sanitize(path.stem)
        views = [_sanitize(f"cam{c}") for c in cams]
        if cfg.frames_as_sequences:
            for row in list(range(len(frames)))[::cfg.stride][: cfg.max_frames]:
                sources.append(Source(f"{name}_f{int(frames[row]):05d}", views, cameras, [frames[row]], [row],
                                      len(frames), read_view, "multiview_images", cfg.fps or 15.0, name,
                                      info={"smc": path.name, "frame": frames[row]}))
        else:
            sources.append(Source(name, views, cameras, frames, list(range(len(frames))), len(frames), read_view,
                                  "multiview_360", cfg.fps or 15.0, name, info={"smc": path.name}))
    return sources


# ---------------------------------------------------------------------------------------------------
# Ava-256 (Martinez et al. 2024)
# ---------------------------------------------------------------------------------------------------

AVA_EXPECTS = """\
  SRC/CAPTURE/decoder/camera_calibration.json
      {"KRT": [{"cameraId": ID, "K": 3x3, "T": 4x4 or 3x4 world-to-camera (either stored transposed)}, ...]}
      intrinsics at the full 2668 px wide sensor (--calibration-width), world in millimetres
      (--world-scale, default 0.001)
  SRC/CAPTURE/decoder/image/camID.zip with FRAME.avif members (6-digit frame ids), or image/camID/FRAME.avif
  optional SRC/CAPTURE/decoder/segmentation_parts/camID.zip (or folder) with FRAME.png part labels
      (alpha = label not 0 (background) and not 3 (chair))
  fits: FITS/CAPTURE.npz with one row per fitted frame and 'frame_id' (F,) naming those frames
  output: one multiview_images sequence CAPTURE_FRAME per fitted frame"""


def _zip_or_folder(base: Path, member: str):
    """Bytes of ``member`` from ``base``.zip or the folder ``base``, or None."""
    if base.with_suffix(".zip").is_file():
        with zipfile.ZipFile(base.with_suffix(".zip")) as z:
            names = {Path(n).name: n for n in z.namelist()}
            return z.read(names[member]) if member in names else None
    p = base / member
    return p.read_bytes() if p.is_file() else None


def _ava_matrix(m, what: str, path: Path) -> np.ndarray:
    """A KRT matrix stored either row-major or transposed (Ava-256's json holds column-major lists)."""
    a = np.asarray(m, dtype=np.float64)
    if what == "K":
        if a.shape != (3, 3):
            raise _layout_error("ava256", path, f"K must be 3x3, got {a.shape}")
        return a.T if abs(a[2, 0]) + abs(a[2, 1]) > 0 and abs(a[0, 2]) + abs(a[1, 2]) == 0 else a
    if a.shape == (4, 3):
        a = a.T
    if a.shape == (4, 4) and np.allclose(a[:3, 3], 0) and not np.allclose(a[3, :3], 0):
        a = a.T
    if a.shape not in ((3, 4), (4, 4)):
        raise _layout_error("ava256", path, f"T must be 3x4 or 4x4, got {a.shape}")
    return a[:3]


def discover_ava256(cfg: ImportConfig) -> list[Source]:
    src = Path(cfg.src)
    captures = sorted(p for p in src.iterdir() if (p / "decoder").is_dir()) if src.is_dir() else []
    if not captures:
        raise _layout_error("ava256", src, "no CAPTURE/decoder/ folder")
    sources = []
    for cap in captures:
        calib = cap / "decoder" / "camera_calibration.json"
        try:
            krt = json.loads(calib.read_text())["KRT"]
        except FileNotFoundError:
            raise _layout_error("ava256", calib, "missing") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise _layout_error("ava256", calib, f"not a KRT json ({e})") from None
        if not isinstance(krt, list) or not krt:
            raise _layout_error("ava256", calib, "'KRT' must be a non-empty list of cameras")
        ids = [str(c["cameraId"]) for c in krt]
        Ks = np.stack([_ava_matrix(c["K"], "K", calib) for c in krt])
        T = np.stack([_ava_matrix(c["T"], "T", calib) for c in krt])
        fits_path = Path(cfg.fits) / f"{_sanitize(cap.name)}.npz"
        if not fits_path.is_file():
            raise Morph4DError(f"ava256: fits {fits_path} not found (one FITS/CAPTURE.npz with 'frame_id' per capture)")
        data = read_npz(fits_path, "ava256 fits")
        if "frame_id" not in data or data["frame_id"].dtype.kind not in "iu":
            raise Morph4DError(f"ava256: {fits_path} lacks 'frame_id' (F,) integers: the frame each fitted row "
                               f"belongs to")
        frame_ids = [int(x) for x in data["frame_id"]]
        image_dir = cap / "decoder" / "image"
        first = _zip_or_folder(image_dir / f"cam{ids[0]}", f"{frame_ids[0]:06d}.avif")
        if first is None:
            raise _layout_error("ava256", image_dir / f"cam{ids[0]}", f"no {frame_ids[0]:06d}.avif (zip or folder)")
        W, H = _image_size(first)
        cameras = _opencv_cameras(T[:, :, :3], T[:, :, 3], Ks, W, H, cfg.world_scale or 0.001,
                                  cfg.calibration_width or 2668)

        def read_view(v, keys, cap=cap, ids=ids):
            for key in keys:
                data = _zip_or_folder(cap / "decoder" / "image" / f"cam{ids[v]}", f"{key:06d}.avif")
                if data is None:
                    raise _layout_error("ava256", cap / "decoder" / "image" / f"cam{ids[v]}", f"no {key:06d}.avif")
                seg = _zip_or_folder(cap / "decoder" / "segmentation_parts" / f"cam{ids[v]}", f"{key:06d}.png")
                alpha = None
                if seg is not None:
                    labels = _decode(seg, "L")
                    alpha = (((labels != 0) & (labels != 3)) * 255).astype(np.uint8)
                yield key, _decode(data, "RGB"), alpha
        for row in list(range(len(frame_ids)))[::cfg.stride][: cfg.max_frames]:
            key = frame_ids[row]
            sources.append(Source(f"{_sanitize(cap.name)}_{key:06d}", [_sanitize(f"cam{i}") for i in ids], cameras,
                                  [key], [row], None, read_view, "multiview_images", cfg.fps or 30.0,
                                  _sanitize(cap.name), info={"capture": cap.name, "frame_id": key}))
    return sources


# ---------------------------------------------------------------------------------------------------
# VFHQ (Xie et al. 2022)
# ---------------------------------------------------------------------------------------------------

VFHQ_EXPECTS = """\
  SRC/CLIP/FRAME.png (or .jpg): the released clips as frame folders, frames sorted by file name
  fits: FITS/CLIP.npz, one row per frame, in the CAMERA frame (camera at the origin looking along +z,
      OpenCV axes, metres) plus 'K' (3x3 pixel intrinsics of the frames, pixel centres at +0.5)
  optional --mattes DIR: DIR/CLIP/FRAME.png grayscale mattes (e.g. from RobustVideoMatting, as MVP4D
      does); without them alpha is 1 and the background stays
  output: one monocular sequence CLIP (non-alphanumerics replaced by '_')"""


def discover_vfhq(cfg: ImportConfig) -> list[Source]:
    src = Path(cfg.src)
    clips = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")) if src.is_dir() else []
    if not clips:
        raise _layout_error("vfhq", src, "no CLIP/ folders")
    sources = []
    for clip in clips:
        files = sorted(p for p in clip.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _layout_error("vfhq", clip, "no frame images")
        name = _sanitize(clip.name)
        fits_path = Path(cfg.fits) / f"{name}.npz"
        if not fits_path.is_file():
            raise Morph4DError(f"vfhq: fits {fits_path} not found (one FITS/CLIP.npz per clip, with 'K')")
        data = read_npz(fits_path, "vfhq fits")
        if "K" not in data or data["K"].shape != (3, 3) or data["K"].dtype.kind not in "iuf":
            raise Morph4DError(f"vfhq: {fits_path} needs 'K' (3, 3): the pixel intrinsics of the clip's frames")
        check_intrinsics(data["K"], "K", f"vfhq: {fits_path}")
        K = data["K"].astype(np.float64)
        W, H = _image_size(files[0])
        eye = torch.eye(3)[None]
        cameras = Cameras(eye, torch.zeros(1, 3), torch.as_tensor(K, dtype=torch.float32)[None], W, H)
        mattes = Path(cfg.mattes) / clip.name if cfg.mattes else None
        if mattes is not None and not mattes.is_dir():
            raise Morph4DError(f"vfhq: --mattes has no folder {mattes} for clip {clip.name}")

        def read_view(v, keys, mattes=mattes):
            for key in keys:
                m = mattes / f"{key.stem}.png" if mattes is not None else None
                if m is not None and not m.is_file():
                    raise Morph4DError(f"vfhq: matte {m} missing")
                yield key, _decode(key, "RGB"), _decode(m, "L") if m is not None else None
        sources.append(Source(name, ["cam00"], cameras, files, list(range(len(files))), len(files), read_view,
                              "monocular", cfg.fps or 25.0, name, info={"clip": clip.name}))
    return sources


# ---------------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Importer:
    discover: Callable[[ImportConfig], list[Source]]
    expects: str


IMPORTERS = {"nersemble": Importer(discover_nersemble, NERSEMBLE_EXPECTS),
             "renderme360": Importer(discover_renderme360, RENDERME_EXPECTS),
             "ava256": Importer(discover_ava256, AVA_EXPECTS),
             "vfhq": Importer(discover_vfhq, VFHQ_EXPECTS)}


def _fits_for(source: Source, rows: list[int], cfg: ImportConfig, model: HeadModel):
    path = Path(cfg.fits) / f"{source.fit_name}.npz"
    if not path.is_file():
        raise Morph4DError(f"sequence '{source.name}': fits file {path} not found")
    anim = load_animation(path, model)
    if source.fit_total is not None and anim.num_frames != source.fit_total:
        raise Morph4DError(f"sequence '{source.name}': {path} has {anim.num_frames} frames of fits, the source has "
                           f"{source.fit_total} frames")
    if max(rows) >= anim.num_frames:
        raise Morph4DError(f"sequence '{source.name}': {path} has {anim.num_frames} rows, row {max(rows)} is needed")
    return select_frames(anim.params, rows)


def _check_visible(source: Source, model: HeadModel, params, dataset: str) -> None:
    """The fitted head of the first frame must project inside the image in at least half of the views."""
    with torch.no_grad():
        centre = model(select_frames(params, 0)).mean(0, keepdim=True)
    p = source.cameras.project(centre)[:, 0]
    inside = (p[:, 2] > 0) & (p[:, 0] > 0) & (p[:, 0] < source.cameras.width) & (p[:, 1] > 0) \
        & (p[:, 1] < source.cameras.height)
    if inside.float().mean() < 0.5:
        raise Morph4DError(f"sequence '{source.name}': the fitted head projects into only {int(inside.sum())} of "
                           f"{len(inside)} views; the calibration or the fits do not follow the {dataset} layout this "
                           f"importer assumes (conventions, world units, fits in the world frame):\n"
                           f"{IMPORTERS[dataset].expects}")


def _resized(rgb: np.ndarray, alpha: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` (W, H) with area filtering and composite over white; float in [0, 1]."""
    img = Image.fromarray(rgb)
    a = Image.fromarray(alpha) if alpha is not None else None
    if img.size != size:
        img = img.resize(size, Image.Resampling.BOX)
        a = a.resize(size, Image.Resampling.BOX) if a is not None else None
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    alpha = np.asarray(a, dtype=np.float32) / 255.0 if a is not None else np.ones(rgb.shape[:2], np.float32)
    return rgb * alpha[..., None] + (1.0 - alpha[..., None]), alpha


def convert(source: Source, cfg: ImportConfig, model: HeadModel, dataset: str, root: Path) -> Path:
    """Write one ``Source`` as a morph4d sequence (frames ``stride``/``max_frames``-selected)."""
    picked = list(range(len(source.frames)))[::cfg.stride][: cfg.max_frames]
    keys = [source.frames[i] for i in picked]
    params = _fits_for(source, [source.fit_rows[i] for i in picked], cfg, model)
    _check_visible(source, model, params, dataset)
    W, H = source.cameras.width, source.cameras.height
    s = min(1.0, cfg.max_side / max(W, H))
    size = (max(1, round(W * s)), max(1, round(H * s)))
    cameras = source.cameras.resized(*size)
    with SequenceWriter(root, source.name, source.views, len(keys), *size) as writer:
        for v in range(len(source.views)):
            position = {k: i for i, k in enumerate(keys)}
            for key, rgb, alpha in source.read_view(v, keys):
                if rgb.shape[:2] != (H, W):
                    raise Morph4DError(f"sequence '{source.name}' view {source.views[v]} frame {key}: image is "
                                       f"{rgb.shape[1]}x{rgb.shape[0]}, the sequence's first image is {W}x{H}")
                out, a = _resized(rgb, alpha, size)
                writer.write_frame(v, position[key], out, a)
        boxes = head_crops(model, params, cameras, cfg.crop_smooth_sigma)
        meta = {"modality": source.modality, "source": dataset, "head_model": model.name, "fps": source.fps,
                "identity_seed": None, "split": None, "source_info": {k: str(v) for k, v in source.info.items()},
                "source_frames": [str(k.name if isinstance(k, Path) else k) for k in keys]}
        return writer.finish(meta, cameras, params, boxes, CROP_SCALE, cfg.crop_smooth_sigma)


def run_import(dataset: str, cfg: ImportConfig, model: HeadModel, log=print) -> list[str]:
    """Import every sequence of ``cfg.src`` (``dataset``'s layout) into ``cfg.out``; resumable."""
    if dataset not in IMPORTERS:
        raise Morph4DError(f"unknown dataset '{dataset}'; importers: {', '.join(IMPORTERS)}")
    if not Path(cfg.fits).is_dir():
        raise Morph4DError(f"fits folder {cfg.fits} does not exist")
    sources = IMPORTERS[dataset].discover(cfg)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    remove_partials(root)
    info = {"source": dataset, "head_model": model.name,
            "import": {"src": str(cfg.src), "max_side": cfg.max_side, "stride": cfg.stride,
                       "max_frames": cfg.max_frames}}
    done = set(finished_sequences(root))
    from tqdm import tqdm
    written = []
    for source in tqdm(sources, disable=not cfg.progress, unit="seq", desc=f"import {dataset}"):
        if source.name in done:
            continue
        convert(source, cfg, model, dataset, root)
        write_index(root, info)
        written.append(source.name)
    write_index(root, info)
    log(f"{len(written)} imported, {len(sources) - len(written)} already there")
    return written


__all__ = ["ImportConfig", "Importer", "IMPORTERS", "Source", "run_import", "convert", "discover_nersemble",
           "discover_renderme360", "discover_ava256", "discover_vfhq"]
