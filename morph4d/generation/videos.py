"""The generated-videos folder: what ``morph4d generate`` writes and the 4D fit and the quality report read.

Layout (format version 1), every file written atomically::

    views/VV/FFFF.png     frame FFFF of view VV, RGB over white
    views/VV.mp4          each view as a video
    grid.mp4              all views tiled
    reference.png         the reference image the views were generated from (ours, issue 17; optional)
    reference_outcrop.png its outcropping mask, white outside the original photo (only when it has one)
    manifest.json         version, frame count, fps, head model; per view: index, azimuth, elevation, key,
                          R, t, K (OpenCV world-to-camera, pixel intrinsics), width, height, the frame
                          pattern and video path; per-frame head parameters (``shape`` once); seeds; plan;
                          optionally ``reference``: its image (and outcrop) file, camera R, t, K, width, height
                          and head parameters (one frame), in the views' world (the head's canonical frame)

The reference lets the avatar fit see the one real image beside the generated views (``avatar.fit``); folders
written without it (older ones, ``morph4d data``) are read as before.

This module is the format's one writer (``write_videos``) and one reader (``read_videos``,
``read_manifest``); nobody else spells the paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from morph4d import __version__
from morph4d.cameras import Cameras
from morph4d.errors import Morph4DError
from morph4d.generation.reference import Reference
from morph4d.heads import HeadParams
from morph4d.heads.animation import MAX_FRAMES
from morph4d.io import write_json
from morph4d.validate import check_finite, check_image_size, check_intrinsics, check_rotation, open_image, read_json
from morph4d.video import grid, read_png, write_mp4, write_png

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_IMAGE = "reference.png"
REFERENCE_OUTCROP = "reference_outcrop.png"

PARAM_KEYS = ("shape", "expression", "jaw", "neck", "eyes", "rotation", "translation")


def frame_path(root: str | Path, view: int, frame: int) -> Path:
    return Path(root) / "views" / f"{view:02d}" / f"{frame:04d}.png"


def video_path(root: str | Path, view: int) -> Path:
    return Path(root) / "views" / f"{view:02d}.mp4"


def is_generated(root: str | Path) -> bool:
    """True when ``root`` is a generated-videos folder (it has a manifest)."""
    return (Path(root) / MANIFEST).is_file()


def write_videos(out: str | Path, videos: list[torch.Tensor], cameras: Cameras, azimuth: torch.Tensor,
                 elevation: torch.Tensor, key: torch.Tensor, params: HeadParams, head_model: str, fps: float,
                 extra: dict, reference: Reference | None = None) -> dict:
    """Write ``videos`` (per view ``(T, H, W, 3)`` in [0, 1]) with their cameras and per-frame head
    ``params`` (``shape`` ``(S,)``, the rest ``(T, ...)``); ``extra`` (seeds, plan) joins the manifest;
    ``reference``: the (canonical) reference they were generated from, in the cameras' world.
    The manifest comes last, so a folder with one is complete. Returns the paths of the manifest and grid."""
    out = Path(out)
    if reference is not None:
        extra = {**extra, "reference": _write_reference(out, reference)}
    V, T = len(videos), videos[0].shape[0]
    for v, frames in enumerate(videos):
        for f in range(T):
            write_png(frame_path(out, v, f), frames[f])
        write_mp4(video_path(out, v), frames, fps=fps)
    tiles = torch.stack(videos, 1)  # (T, V, H, W, 3)
    cols = math.ceil(math.sqrt(V))
    write_mp4(out / "grid.mp4", torch.stack([grid(tiles[f], cols=cols, pad=2) for f in range(T)]), fps=fps)
    manifest = {
        "version": FORMAT_VERSION, "morph4d": __version__, "frames": T, "fps": fps, "head_model": head_model,
        "views": [{"index": v, "azimuth": float(azimuth[v]), "elevation": float(elevation[v]), "key": bool(key[v]),
                   "frames": f"views/{v:02d}/%04d.png", "video": f"views/{v:02d}.mp4",
                   "R": cameras.R[v].tolist(), "t": cameras.t[v].tolist(), "K": cameras.K[v].tolist(),
                   "width": cameras.width, "height": cameras.height} for v in range(V)],
        "params": {k: getattr(params, k).tolist() for k in PARAM_KEYS},
        **extra,
    }
    write_json(out / MANIFEST, manifest)
    return {"manifest": str(out / MANIFEST), "grid": str(out / "grid.mp4")}


def _write_reference(out: Path, ref: Reference) -> dict:
    """The reference's image (and outcrop mask) files and its manifest entry."""
    write_png(out / REFERENCE_IMAGE, ref.image.permute(1, 2, 0).clamp(0, 1))
    entry = {"image": REFERENCE_IMAGE, "R": ref.camera.R[0].tolist(), "t": ref.camera.t[0].tolist(),
             "K": ref.camera.K[0].tolist(), "width": ref.camera.width, "height": ref.camera.height,
             "params": {k: getattr(ref.params, k).reshape(-1).tolist() for k in PARAM_KEYS}}
    if ref.outcrop is not None:
        write_png(out / REFERENCE_OUTCROP, ref.outcrop.float()[..., None].expand(-1, -1, 3))
        entry["outcrop"] = REFERENCE_OUTCROP
    return entry


def _read_reference(root: Path, m: dict) -> Reference | None:
    """The manifest's reference (``write_videos``), checked like the views; None when the folder has none."""
    entry = m.get("reference")
    if entry is None:
        return None
    where = f"{root / MANIFEST}: reference"
    try:
        W, H = int(entry["width"]), int(entry["height"])
        R, t, K = (torch.tensor(entry[k], dtype=torch.float32)[None] for k in ("R", "t", "K"))
        params = {k: torch.tensor(entry["params"][k], dtype=torch.float32) for k in PARAM_KEYS}
        files = [entry["image"]] + ([entry["outcrop"]] if "outcrop" in entry else [])
    except (KeyError, TypeError, ValueError) as e:
        raise Morph4DError(f"{where} is incomplete ({type(e).__name__}: {e})") from None
    if R.shape != (1, 3, 3) or t.shape != (1, 3) or K.shape != (1, 3, 3) or \
            any(Path(f).name != f for f in files):
        raise Morph4DError(f"{where}: expected R (3, 3), t (3,), K (3, 3) and file names inside the folder")
    check_rotation(R, "R", where)
    check_finite(t, "t", where)
    check_intrinsics(K, "K", where)
    for k, v in params.items():
        check_finite(v, f"params.{k}", where)
    images = []
    for name in files:
        with open_image(root / name, where) as im:
            if im.size != (W, H):
                raise Morph4DError(f"{where}: {name} is {im.size[0]}x{im.size[1]}, expected {W}x{H}")
        images.append(read_png(root / name))
    outcrop = images[1][..., 0] > 0.5 if len(images) > 1 else None
    return Reference(images[0].permute(2, 0, 1), HeadParams(**params), Cameras(R, t, K, W, H), m["head_model"],
                     None if outcrop is None else outcrop.float())


def read_manifest(root: str | Path) -> dict:
    """The manifest of a generated-videos folder (``root`` or its ``manifest.json``)."""
    path = Path(root)
    if path.name != MANIFEST:
        path = path / MANIFEST
    if not path.is_file():
        raise Morph4DError(f"no manifest at {path}; run `morph4d generate` (or `morph4d data ...`) first")
    manifest = read_json(path)
    if manifest.get("version") != FORMAT_VERSION:
        raise Morph4DError(f"{path}: unknown generated-videos format (version {manifest.get('version')}; expected "
                           f"{FORMAT_VERSION})")
    try:
        views, frames = manifest["views"], manifest["frames"]
        if isinstance(frames, bool) or not isinstance(frames, int) or not all(
                isinstance(v["index"], int) and not isinstance(v["index"], bool) for v in views):
            raise ValueError("'frames' and each view's 'index' must be whole numbers")
        sizes = {(int(v["width"]), int(v["height"])) for v in views}
        R, t, K = (torch.tensor([v[key] for v in views], dtype=torch.float64) for key in ("R", "t", "K"))
        params = {k: torch.tensor(manifest["params"][k], dtype=torch.float32) for k in PARAM_KEYS}
        float(manifest["fps"]), str(manifest["head_model"])
    except (KeyError, TypeError, ValueError) as e:
        raise Morph4DError(f"{path}: not a complete manifest ({type(e).__name__}: {e})") from None
    if not views or len(sizes) != 1 or not 1 <= frames <= MAX_FRAMES:
        raise Morph4DError(f"{path}: expected >= 1 views of one size and 1..{MAX_FRAMES} frames")
    check_image_size(*sizes.pop(), str(path))
    check_rotation(R, "views' R", str(path))
    check_finite(t, "views' t", str(path))
    check_intrinsics(K, "views' K", str(path))
    for k, v in params.items():
        check_finite(v, f"params.{k}", str(path))
    return manifest


@dataclass
class GeneratedVideos:
    images: torch.Tensor      # (V, F, 3, H, W) in [0, 1]
    cameras: Cameras          # V cameras
    params: HeadParams        # shape (S,), the rest (F, ...)
    head_model: str
    fps: float
    manifest: dict
    reference: Reference | None = None   # the reference image, camera and head parameters (when written)


def _read_frame(root: Path, view: int, frame: int, width: int, height: int) -> torch.Tensor:
    """One frame, its size checked against the manifest's from the file header before it is decoded."""
    path = frame_path(root, view, frame)
    where = f"{root}: frame {path.relative_to(root)}"
    with open_image(path, where) as im:
        if im.size != (width, height):
            raise Morph4DError(f"{where} is {im.size[0]}x{im.size[1]}, expected {width}x{height} (manifest.json)")
    return read_png(path)


def read_videos(root: str | Path) -> GeneratedVideos:
    """Every frame of every view of a generated-videos folder, with its cameras and head parameters."""
    root = Path(root)
    m = read_manifest(root)
    views = m["views"]
    W, H = views[0]["width"], views[0]["height"]
    missing = [str(frame_path(root, v["index"], f).relative_to(root)) for v in views for f in range(m["frames"])
               if not frame_path(root, v["index"], f).is_file()]
    if missing:
        raise Morph4DError(f"{root}: the manifest lists frames that are missing, e.g. {missing[:3]}")
    images = torch.stack([torch.stack([_read_frame(root, v["index"], f, W, H) for f in range(m["frames"])])
                          for v in views]).permute(0, 1, 4, 2, 3)
    t = lambda key: torch.tensor([v[key] for v in views], dtype=torch.float32)  # noqa: E731
    params = HeadParams(**{k: torch.tensor(m["params"][k], dtype=torch.float32) for k in PARAM_KEYS})
    return GeneratedVideos(images, Cameras(t("R"), t("t"), t("K"), W, H), params, m["head_model"], m["fps"], m,
                           _read_reference(root, m))


__all__ = ["FORMAT_VERSION", "MANIFEST", "GeneratedVideos", "frame_path", "is_generated", "read_manifest",
           "read_videos", "video_path", "write_videos"]
