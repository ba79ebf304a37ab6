"""``morph4d track``: a portrait photo -> tracked reference, or a driving video -> animation, with overlays.

Outputs in ``OUT`` (written only after the input was read and tracked; each file atomically):

    photo:  reference.npz (generation/reference.py format, ready for ``generate`` / ``avatar``), reference.png
            (the matted crop), background.png (the crop with the person inpainted away: IM-Portrait's static
            background), overlay.png (input crop | fitted mesh + landmarks | matted reference), track.json
    video:  animation.npz (heads/animation.py format, FLAME key names on load; drives ``render`` / ``view`` /
            ``avatar --animation``), overlay.mp4, track.json

track.json holds the resolved configuration and what was measured (focal length, faces found, frames with a
face, seconds).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.heads import load_head_model
from morph4d.io import write_json
from morph4d.tracking.detect import MEDIAPIPE_VERSION, FaceModels
from morph4d.tracking.embedding import default_embedding
from morph4d.tracking.fit import tracking_camera
from morph4d.tracking.overlay import draw_overlay
from morph4d.tracking.portrait import crop_photo, read_photo, track_photo
from morph4d.tracking.video import read_video, track_video
from morph4d.video import write_mp4, write_png

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
OVERLAY_SIZE = 384


@dataclass(frozen=True)
class TrackConfig:
    input: str
    out: str
    res: int = 512                 # reference crop side (photo): the generation's resolution
    head: str = "builtin"
    flame_path: str | None = None
    embedding: str | None = None   # landmark embedding file (FLAME: required)
    max_frames: int | None = None  # video: track at most this many frames


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def run_track(cfg: TrackConfig, log=print) -> dict:
    """Track ``cfg.input`` (a photo or, by its extension, a video) into ``cfg.out`` (module docstring)."""
    from morph4d.generation.reference import MAX_REFERENCE_RESOLUTION, RESOLUTION_MULTIPLE

    if not RESOLUTION_MULTIPLE <= cfg.res <= MAX_REFERENCE_RESOLUTION or cfg.res % RESOLUTION_MULTIPLE:
        raise Morph4DError(f"--res must be a multiple of {RESOLUTION_MULTIPLE} from {RESOLUTION_MULTIPLE} to "
                           f"{MAX_REFERENCE_RESOLUTION}, got {cfg.res}")
    model = load_head_model(cfg.head, flame_path=cfg.flame_path)
    emb = default_embedding(model, cfg.embedding)
    fm = FaceModels()
    out = Path(cfg.out)
    t0 = time.perf_counter()
    info = {"config": asdict(cfg), "mediapipe_models": MEDIAPIPE_VERSION, "threads": torch.get_num_threads()}
    if is_video(cfg.input):
        frames, fps = read_video(cfg.input, cfg.max_frames)
        tracked = track_video(frames, fps, model, emb, fm, what=f"video {cfg.input}", log=log)
        seconds = time.perf_counter() - t0
        anim = tracked.animation
        # the clip's mean head position becomes the origin: the animation moves around the head's rest place
        p = anim.params
        anim.params = p.replace(translation=p.translation - p.translation.mean(0, keepdim=True))
        camera = tracking_camera(tracked.track.focal, tracked.width, tracked.height)
        overlay = []
        for i, image in enumerate(frames):
            ev = tracked.evidence[i]
            frame_params = tracked.track.params.replace(
                **{k: getattr(tracked.track.params, k)[i] for k in ("expression", "jaw", "neck", "eyes", "rotation",
                                                                  "translation")})
            overlay.append(draw_overlay(image, model, frame_params, camera,
                                        None if ev is None else ev.landmarks[:, :2], emb))
        out.mkdir(parents=True, exist_ok=True)
        anim.save(out / "animation.npz")
        write_mp4(out / "overlay.mp4", np.stack(overlay), fps=fps)
        info.update(kind="video", frames=len(frames), frames_with_face=int(tracked.found.sum()), fps=fps,
                    focal_px=tracked.track.focal, size=[tracked.width, tracked.height], seconds=round(seconds, 2),
                    frames_per_second=round(len(frames) / seconds, 2))
        write_json(out / "track.json", info)
        log(f"tracked {len(frames)} frames ({int(tracked.found.sum())} with a face) in {seconds:.1f} s")
        return {"animation": str(out / "animation.npz"), "overlay": str(out / "overlay.mp4")}
    photo, reduced = read_photo(cfg.input)
    tracked = track_photo(photo, model, emb, cfg.res, fm, what=f"photo {cfg.input}")
    seconds = time.perf_counter() - t0
    if tracked.faces > 1:
        log(f"note: {tracked.faces} faces found in {cfg.input}; tracking the largest")
    # overlay panel at a readable size: input crop | mesh + landmarks | matted reference
    H, W = photo.shape[:2]
    crop, _ = crop_photo(torch.from_numpy(photo).permute(2, 0, 1), tracked.box, OVERLAY_SIZE)
    crop = crop.permute(1, 2, 0).numpy()
    camera = tracking_camera(tracked.track.focal, W, H).cropped(tracked.box[None], OVERLAY_SIZE)
    s = OVERLAY_SIZE / float(tracked.box[2])
    detected = (tracked.evidence.landmarks[:, :2] - tracked.box[:2].numpy()) * s
    fitted = draw_overlay(crop.copy(), model, tracked.track.params, camera, detected, emb)
    ref = torch.nn.functional.interpolate(tracked.reference.image[None], size=OVERLAY_SIZE, mode="bilinear",
                                          align_corners=False)[0].permute(1, 2, 0).numpy()
    panel = np.concatenate([crop, fitted, ref], 1)
    out.mkdir(parents=True, exist_ok=True)
    tracked.reference.save(out / "reference.npz")
    write_png(out / "reference.png", tracked.reference.image.permute(1, 2, 0))
    write_png(out / "background.png", tracked.background.permute(1, 2, 0))
    write_png(out / "overlay.png", panel)
    info.update(kind="photo", faces=tracked.faces, focal_px=tracked.track.focal, size=[W, H],
                reduced_by=round(reduced, 3), crop_box=[round(float(v), 2) for v in tracked.box],
                outcrop=bool(tracked.reference.outcrop is not None), seconds=round(seconds, 2))
    write_json(out / "track.json", info)
    log(f"tracked {cfg.input} in {seconds:.1f} s (focal {tracked.track.focal:.0f} px"
        f"{f', {tracked.faces} faces: the largest' if tracked.faces > 1 else ''})")
    return {"reference": str(out / "reference.npz"), "overlay": str(out / "overlay.png")}
