"""The morph4d multi-view head dataset format, version 1 (documented for users in ``docs/DATA.md``).

One folder per dataset, one sub-folder per sequence; every sequence is V static cameras x F frames of
one person with per-frame head parameters, covering the four modalities of MVP4D's curriculum (§3.3,
Table 2, S2.2)::

    DATASET/
      dataset.json              index: format, version, sequence names, how the data was made
      SEQUENCE/
        meta.json               format, version, modality, head model, fps, frames, view names, size, ...
        cameras.npz             R (V,3,3), t (V,3), K (V,3,3) float32, width, height: OpenCV world-to-camera,
                                pixel intrinsics, pixel centres at +0.5 (CONVENTIONS.md)
        params.npz              per-frame HeadParams: shape (S,), expression (F,E), jaw/neck/rotation/
                                translation (F,3), eyes (F,6) float32
        crops.npz               boxes (V,F,4) float32 head crops (u0, v0, size, size) (MVP4D S2.1), scale,
                                smooth_sigma
        images/VIEW/FFFFFF.png  RGBA 8 bit: RGB composited over white, A = alpha matte

Images are one PNG per view and frame: a loader reads an F-frame window of V views without decoding
whole videos, the matte stays lossless, and any image viewer opens them.

A sequence is written into a hidden temporary folder (``.NAME.partial-PID``) and becomes visible only
when that folder is renamed to ``NAME`` after every file is in place (``SequenceWriter``): a killed
writer never leaves a half-written sequence a loader would read. ``dataset.json`` is rewritten
atomically after each finished sequence and rebuilt from the folders on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError
from morph4d.heads import HeadParams
from morph4d.io import write_json
from morph4d.validate import (
    IMAGE_ERRORS,
    check_finite,
    check_image_size,
    check_intrinsics,
    check_rotation,
    open_image,
    read_json,
    read_npz,
)

FORMAT_VERSION = 1
DATASET_FORMAT = "morph4d-dataset"
SEQUENCE_FORMAT = "morph4d-sequence"
MODALITIES = ("monocular", "multiview_video", "multiview_images", "multiview_360")
PARAM_FIELDS = ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PARTIAL = re.compile(r"^\..+\.partial-\d+$")


def check_name(kind: str, name: str) -> str:
    """Sequence and view names become folder names: letters, digits, '_', '-', '.', not starting with '.'."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise Morph4DError(f"{kind} name {name!r} is not allowed; use letters, digits, '_', '-' or '.', "
                           f"starting with a letter or digit")
    return name


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise Morph4DError(f"unknown modality '{modality}'; expected one of {', '.join(MODALITIES)}")
    return modality


def mix_seed(*parts) -> int:
    """A 63-bit seed from printable parts (SHA-256): the same in every process, order and Python version.

    Seeds synthetic sequences (identity seed, sequence index, modality) and loader items (seed, epoch,
    index), so both are deterministic however the work is split.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def frame_file(frame: int) -> str:
    return f"{frame:06d}.png"


# ---------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------

def _to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class SequenceWriter:
    """Write one sequence atomically: frames first, then ``finish(...)`` renames the folder into place.

    Use as a context manager; an exception (or a kill) leaves only a hidden ``.NAME.partial-PID`` folder,
    which loaders never read and ``remove_partials`` deletes on the next run.
    """

    def __init__(self, root: str | Path, name: str, views: list[str], num_frames: int, width: int, height: int):
        self.root, self.name = Path(root), check_name("sequence", name)
        self.views = [check_name("view", v) for v in views]
        if len(set(self.views)) != len(self.views):
            raise Morph4DError(f"sequence '{name}': view names must be unique, got {self.views}")
        if num_frames < 1 or width < 1 or height < 1:
            raise Morph4DError(f"sequence '{name}': needs >= 1 frame and a positive image size")
        self.num_frames, self.width, self.height = num_frames, width, height
        self.final = self.root / name
        if self.final.exists():
            raise Morph4DError(f"sequence '{name}' already exists in {self.root}")
        self.tmp = self.root / f".{name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        for v in self.views:
            (self.tmp / "images" / v).mkdir(parents=True)
        self._written = np.zeros((len(views), num_frames), dtype=bool)

    def __enter__(self) -> "SequenceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_frame(self, view: int, frame: int, rgb, alpha) -> None:
        """One image: ``rgb`` (H, W, 3) composited over white and ``alpha`` (H, W), float in [0, 1]."""
        rgb8, a8 = _to_uint8(rgb), _to_uint8(alpha)
        if rgb8.shape != (self.height, self.width, 3) or a8.shape != (self.height, self.width):
            raise Morph4DError(f"sequence '{self.name}' view {self.views[view]} frame {frame}: expected rgb "
                               f"({self.height}, {self.width}, 3) and alpha ({self.height}, {self.width}), got "
                               f"{rgb8.shape} and {a8.shape}")
        path = self.tmp / "images" / self.views[view] / frame_file(frame)
        Image.fromarray(np.concatenate([rgb8, a8[..., None]], -1), "RGBA").save(path, compress_level=4)
        self._written[view, frame] = True

    def finish(self, meta: dict, cameras: Cameras, params: HeadParams, boxes: torch.Tensor,
               crop_scale: float, smooth_sigma: float) -> Path:
        """Write meta.json, cameras.npz, params.npz, crops.npz, validate, and rename into place."""
        if not self._written.all():
            v, f = np.argwhere(~self._written)[0]
            raise Morph4DError(f"sequence '{self.name}': image of view {self.views[v]} frame {f} was never written")
        V, Fr = len(self.views), self.num_frames
        meta = dict(meta, format=SEQUENCE_FORMAT, version=FORMAT_VERSION, name=self.name, views=self.views,
                    num_frames=Fr, width=self.width, height=self.height)
        check_modality(meta.get("modality", ""))
        if len(cameras) != V or cameras.width != self.width or cameras.height != self.height:
            raise Morph4DError(f"sequence '{self.name}': {len(cameras)} cameras of {cameras.width}x{cameras.height} "
                               f"for {V} views of {self.width}x{self.height}")
        if tuple(boxes.shape) != (V, Fr, 4):
            raise Morph4DError(f"sequence '{self.name}': crop boxes must be (V={V}, F={Fr}, 4), got {tuple(boxes.shape)}")
        f32 = lambda x: x.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        with open(self.tmp / "cameras.npz", "wb") as fh:
            np.savez(fh, R=f32(cameras.R), t=f32(cameras.t), K=f32(cameras.K), width=np.int64(self.width),
                     height=np.int64(self.height))
        with open(self.tmp / "params.npz", "wb") as fh:
            np.savez(fh, **{k: f32(getattr(params, k)) for k in PARAM_FIELDS})
        with open(self.tmp / "crops.npz", "wb") as fh:
            np.savez(fh, boxes=f32(boxes), scale=np.float32(crop_scale), smooth_sigma=np.float32(smooth_sigma))
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        read_sequence(self.tmp, check_images=True)   # the same checks a loader makes, before it is visible
        os.replace(self.tmp, self.final)
        return self.final


def remove_partials(root: str | Path) -> list[str]:
    """Delete the hidden folders of sequences whose writer was interrupted; returns their names."""
    root = Path(root)
    gone = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and _PARTIAL.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
    return gone


def finished_sequences(root: str | Path) -> list[str]:
    """Names of the complete sequences in ``root`` (visible folders with a meta.json), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "meta.json").is_file())


def write_index(root: str | Path, info: dict) -> dict:
    """(Re)write ``dataset.json`` from the finished sequence folders; ``info`` records how they were made."""
    root = Path(root)
    names = finished_sequences(root)
    modalities: dict[str, int] = {}
    for n in names:
        m = read_meta(root / n)["modality"]
        modalities[m] = modalities.get(m, 0) + 1
    index = {"format": DATASET_FORMAT, "version": FORMAT_VERSION, "sequences": names, "modalities": modalities,
             **{k: v for k, v in info.items() if k not in ("format", "version", "sequences", "modalities")}}
    write_json(root / "dataset.json", index)
    return index


def select_frames(params: HeadParams, frames) -> HeadParams:
    """Frames of per-frame ``params``: a list gives (len, ...) fields, an int drops the frame dim."""
    idx = frames if isinstance(frames, int) else torch.as_tensor(frames, dtype=torch.long)
    return HeadParams(shape=params.shape, **{k: getattr(params, k)[idx] for k in PARAM_FIELDS if k != "shape"})


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------

@dataclass
class Sequence:
    """A sequence on disk: ``meta`` (meta.json), ``cameras`` (V), ``params`` (F frames), ``boxes`` (V, F, 4)."""
    path: Path
    meta: dict
    cameras: Cameras
    params: HeadParams
    boxes: torch.Tensor

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def num_views(self) -> int:
        return len(self.meta["views"])

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    def read_images(self, views, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of ``views`` x ``frames`` (index lists): rgb (v, f, H, W, 3) and alpha (v, f, H, W)."""
        return read_images(self.path, [self.meta["views"][v] for v in views], list(frames),
                           (int(self.meta["width"]), int(self.meta["height"])))


def _load_npz(path: Path, what: str, name: str) -> dict:
    if not path.exists() and not path.is_symlink():
        raise Morph4DError(f"sequence '{name}': {path.name} is missing ({what})")
    return read_npz(path, f"sequence '{name}': {path.name} ({what})")


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    name = path.name.split(".partial-")[0].lstrip(".")
    if not path.is_dir():
        raise Morph4DError(f"sequence '{name}': folder {path} does not exist")
    if not (path / "meta.json").exists():
        raise Morph4DError(f"sequence '{name}': meta.json is missing in {path}")
    meta = read_json(path / "meta.json", f"sequence '{name}': meta.json")
    if meta.get("format") != SEQUENCE_FORMAT:
        raise Morph4DError(f"sequence '{name}': meta.json is not a {SEQUENCE_FORMAT} file")
    if meta.get("version") != FORMAT_VERSION:
        raise Morph4DError(f"sequence '{name}': format version {meta.get('version')} is not supported "
                           f"(this morph4d reads version {FORMAT_VERSION})")
    missing = [k for k in ("name", "modality", "head_model", "fps", "num_frames", "views", "width", "height")
               if k not in meta]
    if missing:
        raise Morph4DError(f"sequence '{name}': meta.json lacks {missing}")
    for key in ("num_frames", "width", "height"):
        if isinstance(meta[key], bool) or not isinstance(meta[key], int):
            raise Morph4DError(f"sequence '{name}': meta.json {key} must be a whole number, got {meta[key]!r}")
    if not isinstance(meta["views"], list) or not meta["views"] or not all(
            isinstance(v, str) and v and "/" not in v and v not in (".", "..") for v in meta["views"]):
        raise Morph4DError(f"sequence '{name}': meta.json 'views' must be a non-empty list of view folder names")
    fps = meta["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise Morph4DError(f"sequence '{name}': meta.json fps must be a positive number, got {fps!r}")
    try:
        check_modality(meta["modality"])
    except ValueError as e:
        raise Morph4DError(f"sequence '{name}': {e}") from None
    return meta


def read_sequence(path: str | Path, check_images: bool = False) -> Sequence:
    """Read and validate a sequence folder; ``check_images`` also checks every PNG exists with its size."""
    path = Path(path)
    meta = read_meta(path)
    name, V, Fr = meta["name"], len(meta["views"]), int(meta["num_frames"])
    W, H = meta["width"], meta["height"]
    check_image_size(W, H, f"sequence '{name}': meta.json")
    if Fr < 1:
        raise Morph4DError(f"sequence '{name}': meta.json num_frames must be >= 1, got {Fr}")
    cam = _load_npz(path / "cameras.npz", "the cameras", name)
    for key, shape in (("R", (V, 3, 3)), ("t", (V, 3)), ("K", (V, 3, 3))):
        if key not in cam or cam[key].shape != shape:
            raise Morph4DError(f"sequence '{name}': cameras.npz '{key}' must be {shape} for {V} views, got "
                               f"{None if key not in cam else cam[key].shape}")
    if int(cam.get("width", -1)) != W or int(cam.get("height", -1)) != H:
        raise Morph4DError(f"sequence '{name}': cameras.npz width/height disagree with meta.json ({W}x{H})")
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    where = f"sequence '{name}': cameras.npz"
    check_rotation(cam["R"], "R", where)
    check_finite(t(cam["t"]), "t", where)
    check_intrinsics(cam["K"], "K", where)
    cameras = Cameras(t(cam["R"]), t(cam["t"]), t(cam["K"]), W, H)
    raw = _load_npz(path / "params.npz", "the per-frame head parameters", name)
    missing = [k for k in PARAM_FIELDS if k not in raw]
    if missing:
        raise Morph4DError(f"sequence '{name}': params.npz lacks {missing}")
    for k in PARAM_FIELDS:
        check_finite(t(raw[k]), k, f"sequence '{name}': params.npz")
    params = HeadParams(**{k: t(raw[k]) for k in PARAM_FIELDS})
    if params.jaw.shape[0] != Fr or params.jaw.dim() != 2:
        raise Morph4DError(f"sequence '{name}': params.npz has {tuple(params.jaw.shape)} jaw, expected ({Fr}, 3)")
    try:
        params.check(params.shape.shape[-1], params.expression.shape[-1])
    except ValueError as e:
        raise Morph4DError(f"sequence '{name}': params.npz: {e}") from None
    crops = _load_npz(path / "crops.npz", "the head crop boxes", name)
    if "boxes" not in crops or crops["boxes"].shape != (V, Fr, 4):
        raise Morph4DError(f"sequence '{name}': crops.npz 'boxes' must be ({V}, {Fr}, 4)")
    if check_images:
        for v in meta["views"]:
            for f in range(Fr):
                p = path / "images" / v / frame_file(f)
                if not p.is_file():
                    raise Morph4DError(f"sequence '{name}': image {p.relative_to(path)} is missing")
                with _open_frame(p, path, W, H) as im:
                    if im.mode != "RGBA":
                        raise Morph4DError(f"sequence '{name}': {p.relative_to(path)} is {im.mode}, expected RGBA")
    return Sequence(path, meta, cameras, params, t(crops["boxes"]))


def _open_frame(p: Path, seq: Path, width: int | None = None, height: int | None = None) -> Image.Image:
    """A frame image of a sequence, opened header-first: missing, directory, not an image, or of another size
    than ``width`` x ``height`` (a decompression bomb is one) -> a clear error before decoding."""
    where = f"sequence '{seq.name}': image {p.relative_to(seq)}"
    if not p.exists():
        raise Morph4DError(f"{where} is missing")
    im = open_image(p, where)
    if width is not None and im.size != (width, height):
        im.close()
        raise Morph4DError(f"{where} is {im.size[0]}x{im.size[1]}, expected {width}x{height} (meta.json)")
    return im


def read_images(path: str | Path, view_names: list[str], frames: list[int],
                size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (v, f, H, W, 3) and alpha (v, f, H, W), float in [0, 1], of the named views and frame indices. Every
    frame must be ``size`` (W, H) or, without it, the first frame's size; a frame of another size is refused
    before it is decoded."""
    path = Path(path)
    out = []
    for v in view_names:
        row = []
        for f in frames:
            p = path / "images" / v / frame_file(f)
            with _open_frame(p, path, *(size or (None, None))) as im:
                size = im.size
                try:
                    row.append(np.asarray(im.convert("RGBA")))
                except IMAGE_ERRORS as e:
                    raise Morph4DError(f"sequence '{path.name}': image images/{v}/{frame_file(f)} is not a "
                                       f"readable image ({e})") from None
        out.append(np.stack(row))
    data = torch.from_numpy(np.stack(out)).float() / 255.0   # (v, f, H, W, 4)
    return data[..., :3].contiguous(), data[..., 3].contiguous()


def read_index(root: str | Path) -> dict:
    """Read ``dataset.json``; a clear error names the folder and what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise Morph4DError(f"dataset folder {root} does not exist")
    path = root / "dataset.json"
    if not path.is_file():
        raise Morph4DError(f"{root} is not a morph4d dataset: dataset.json is missing (make one with "
                           f"`morph4d data synth` or `morph4d data import`)")
    index = read_json(path)
    if index.get("format") != DATASET_FORMAT or not isinstance(index.get("sequences"), list):
        raise Morph4DError(f"{path} is not a {DATASET_FORMAT} index (needs 'format' and a 'sequences' list)")
    if index.get("version") != FORMAT_VERSION:
        raise Morph4DError(f"{path}: format version {index.get('version')} is not supported (reads {FORMAT_VERSION})")
    return index


def open_dataset(root: str | Path) -> list[Sequence]:
    """All sequences listed in ``root/dataset.json``, read and validated (not their images)."""
    root = Path(root)
    index = read_index(root)
    if not index["sequences"]:
        raise Morph4DError(f"dataset {root} lists no sequences")
    return [read_sequence(root / check_name("sequence", n)) for n in index["sequences"]]
