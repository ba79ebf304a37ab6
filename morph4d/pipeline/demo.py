"""The demo job (`make demo`): the head model, animated, rendered from an orbit of cameras -> MP4 + contact
sheet; the MVP4D conditioning maps of the same animation as channel grids; and MVP4D end to end on the
embedded default: a held-out synthetic person's portrait -> multi-view videos -> fitted 4D Gaussian avatar
-> orbit and re-animated MP4s, a 3DGS .ply and the WebGL viewer (``morph4d.pipeline.avatar``), on a real photograph
and on a held-out synthetic person; and IM-Portrait on the same two portraits with its embedded default
(``morph4d.pipeline.portrait``): the talking video as MPIs, its +-5 degree side views, a stereo pair and depth.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.avatar.fit import DEMO_ITERATIONS, FitConfig
from morph4d.cameras import HEAD_CENTRE, VIEW_FOV, VIEW_RADIUS, orbit_cameras
from morph4d.conditioning.projection import PROJECTION_VERSION
from morph4d.conditioning.viz import VizConfig, run_viz
from morph4d.data.heldout import held_out_identity
from morph4d.errors import Morph4DError
from morph4d.generation.plan import PRESETS
from morph4d.generation.reference import held_out_reference
from morph4d.heads import load_head_model
from morph4d.heads.animation import get_animation
from morph4d.io import write_json
from morph4d.mesh.shade import preview_colors, shade_mesh
from morph4d.models.folder import DEFAULT_PORTRAIT, weights_digest
from morph4d.pipeline.avatar import RUN_VERSION, AvatarConfig, run_avatar
from morph4d.pipeline.portrait import RUN_VERSION as PORTRAIT_RUN_VERSION
from morph4d.pipeline.portrait import PortraitConfig, run_portrait
from morph4d.threads import thread_counts
from morph4d.validate import read_json
from morph4d.video import grid, write_mp4, write_png


@dataclass(frozen=True)
class DemoConfig:
    out: str = "out/demo"
    head: str = "builtin"
    flame_path: str | None = None
    animation: str = "talk"
    frames: int = 49
    fps: float = 25.0
    resolution: int = 256
    radius: float = VIEW_RADIUS   # camera distance (m)
    fov: float = VIEW_FOV         # vertical field of view (deg): the head fills ~80% of the frame
    sheet_views: int = 8          # contact sheet: views around the head (rows) ...
    sheet_frames: int = 6         # ... times frames of the animation (columns)
    sheet_resolution: int = 160
    conditioning: bool = True     # also write the MVP4D conditioning grids (needs frames = 1 + 4k)
    conditioning_resolution: int = 256
    avatar: bool = True           # held-out synthetic portrait -> `morph4d avatar` (generate, fit, render, view)
    avatar_resolution: int = 64   # the embedded default's resolution
    avatar_iterations: int = DEMO_ITERATIONS   # fit.FIT_PRESETS["demo"] (README "Speed": 119 s of the demo)
    avatar_model: str | None = None         # model folder (None: the embedded default)
    avatar_key_steps: int | None = None     # DDIM steps (None: the small plan's)
    avatar_other_steps: int | None = None
    portrait: bool = True                   # IM-Portrait's talking videos (photo + held-out person)
    portrait_model: str | None = None       # U-Net folder (None: the embedded default, models.folder)
    portrait_frames: int = 32               # two clips of 16: the second continues the first (clip chaining)
    portrait_steps: int = 20                # DDIM steps per clip

    def check(self) -> None:
        for name in ("frames", "resolution", "sheet_views", "sheet_frames", "sheet_resolution"):
            if getattr(self, name) < 1:
                raise Morph4DError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 1.0 <= self.fov <= 120.0:
            raise Morph4DError(f"--fov must be in [1, 120] degrees, got {self.fov}")


def _render(model, vertices, colors, azimuth, elevation, cfg: DemoConfig, res: int, chunk: int = 8):
    """Render vertices (F, N, 3), one camera per frame, in chunks -> (F, res, res, 3)."""
    out = []
    for s in range(0, len(vertices), chunk):
        cams = orbit_cameras(azimuth[s:s + chunk], elevation[s:s + chunk], cfg.radius, cfg.fov, res, res,
                             target=HEAD_CENTRE)
        image, _ = shade_mesh(vertices[s:s + chunk], model.faces, colors, cams)
        out.append(image)
    return torch.cat(out)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Render the orbit MP4 and the contact sheet into ``cfg.out``; returns the output paths."""
    cfg.check()
    start = time.perf_counter()
    out = Path(cfg.out)
    model = load_head_model(cfg.head, flame_path=cfg.flame_path)
    anim = get_animation(cfg.animation, model, cfg.frames, cfg.fps)
    anim.check_model(model)
    colors = preview_colors(model)
    with torch.no_grad():
        vertices = model(anim.params)  # (F, N, 3)
        F = vertices.shape[0]
        log(f"head model: {model.describe()}")
        log(f"animation '{anim.name}': {F} frames at {anim.fps:g} fps")
        # 1. orbit video: one full turn of the camera over the animation, gently bobbing in elevation
        phase = torch.arange(F, dtype=torch.float64) / F
        azimuth, elevation = 360.0 * phase, 12.0 * torch.sin(2 * torch.pi * phase)
        frames = _render(model, vertices, colors, azimuth, elevation, cfg, cfg.resolution)
        paths = {"video": out / "orbit.mp4", "contact_sheet": out / "contact_sheet.png",
                 "config": out / "config.json"}
        write_mp4(paths["video"], frames, fps=anim.fps)
        log(f"wrote {paths['video']}")
        # 2. contact sheet: rows = views around the head, columns = frames of the animation
        pick = torch.linspace(0, F - 1, cfg.sheet_frames).round().long()
        az = torch.arange(cfg.sheet_views, dtype=torch.float64) * 360.0 / cfg.sheet_views
        v = vertices[pick].repeat(cfg.sheet_views, 1, 1)
        tiles = _render(model, v, colors, az.repeat_interleave(cfg.sheet_frames),
                        torch.full((len(v),), 8.0, dtype=torch.float64), cfg, cfg.sheet_resolution)
        write_png(paths["contact_sheet"], grid(tiles, cols=cfg.sheet_frames))
        log(f"wrote {paths['contact_sheet']}")
    seconds = {"head_videos": time.perf_counter() - start}
    # 3. the MVP4D conditioning maps of the same animation, as channel grids (MVP4D Fig. S9)
    if cfg.conditioning and (cfg.frames - 1) % 4 == 0:
        viz = run_viz(VizConfig(out=str(out / "conditioning"), animation=cfg.animation, frames=cfg.frames,
                                head=cfg.head, flame_path=cfg.flame_path, resolution=cfg.conditioning_resolution),
                      log=lambda *_: None)
        paths["conditioning"] = Path(viz["overview"])
        log(f"wrote {viz['overview']} and {viz['channels']}")
    seconds["conditioning"] = time.perf_counter() - start - sum(seconds.values())
    # 4. MVP4D end to end on a real photograph: track -> generate -> fit -> render / export / viewer
    if cfg.avatar and cfg.head == "builtin":
        photo = _photo_stage(cfg, out, log)
        paths.update(photo_overlay=out / "photo" / "track" / "overlay.png", photo_video=Path(photo["video"]),
                     photo_reanimated=Path(photo["reanimated"]), photo_viewer=Path(photo["viewer"]))
        seconds["photo_avatar"] = time.perf_counter() - start - sum(seconds.values())
    # 5. the same on a held-out synthetic person's portrait (ground truth exists: morph4d quality)
    if cfg.avatar and cfg.head == "builtin":
        avatar = _avatar_stage(cfg, out, log)
        paths.update(avatar_video=Path(avatar["video"]), avatar_reanimated=Path(avatar["reanimated"]),
                     avatar_viewer=Path(avatar["viewer"]), generated=Path(avatar["generated"]).parent / "grid.mp4")
        seconds["avatar"] = time.perf_counter() - start - sum(seconds.values())   # its stages: avatar/timings.json
    # 6. IM-Portrait (the second system) on both portraits: talking video, +-5 degree side views, stereo pair
    portrait_model = _portrait_model(cfg)
    if cfg.portrait and cfg.head == "builtin" and not (portrait_model / "config.json").is_file():
        log(f"IM-Portrait: skipped, no weights at {portrait_model} (the embedded default is missing; "
            f"scripts/train_portrait_default.sh trains one there)")
    elif cfg.portrait and cfg.head == "builtin":
        for name, reference in (("photo", str(PORTRAIT)), ("synthetic", _synthetic_reference(cfg, out))):
            paths.update({f"portrait_{name}_{k}": Path(v) for k, v in _portrait_stage(cfg, reference,
                                                                                       out / f"portrait_{name}",
                                                                                       log).items()})
        seconds["portrait"] = time.perf_counter() - start - sum(seconds.values())
    total = time.perf_counter() - start
    write_json(paths["config"], {"demo": asdict(cfg), "head_model": model.describe(), "seconds": round(total, 2),
                                 "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
                                 "threads": thread_counts(), "load_average": [round(x, 2) for x in os.getloadavg()]})
    log(f"demo: {total:.0f} s wall ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); load average "
        f"{os.getloadavg()[0]:.2f}")
    return {k: str(p) for k, p in paths.items()}


PORTRAIT = Path(__file__).resolve().parent.parent / "assets" / "portraits" / "eileen_collins.jpg"  # NASA, public domain


def _fresh(cfg: DemoConfig, folder: Path, log) -> None:
    """Delete a previous demo run in ``folder`` made with other weights or another run layout."""
    previous = folder / "pipeline.json"
    if previous.is_file():
        state = read_json(previous)
        if state.get("model_weights") != weights_digest(cfg.avatar_model) or state.get("run_version") != RUN_VERSION \
                or state.get("projection_version") != PROJECTION_VERSION:
            log(f"the model or morph4d changed since the last demo in {folder}: starting its avatar afresh")
            shutil.rmtree(folder)


def _run(cfg: DemoConfig, reference: str, folder: Path, log) -> dict:
    return run_avatar(AvatarConfig(reference=reference, out=str(folder), animation=cfg.animation,
                                   model=cfg.avatar_model, key_steps=cfg.avatar_key_steps,
                                   other_steps=cfg.avatar_other_steps, reference_res=cfg.avatar_resolution,
                                   fit=FitConfig(iterations=cfg.avatar_iterations, log_every=100)), log=log)


def _photo_stage(cfg: DemoConfig, out: Path, log) -> dict:
    """MVP4D end to end on a real photograph (issue 16): ``morph4d avatar PHOTO`` tracks it (reference.npz +
    overlay.png in photo/track/), then generates, fits, renders and exports as for any reference."""
    _fresh(cfg, out / "photo", log)
    log(f"real portrait: {PORTRAIT} (NASA, public domain; source in assets/portraits/SOURCE.md)")
    return _run(cfg, str(PORTRAIT), out / "photo", log)


def _synthetic_reference(cfg: DemoConfig, out: Path) -> str:
    """The held-out synthetic person's portrait (seed 900000) as a tracked reference at the embedded defaults'
    64 px (written once; the avatar stage makes the same one)."""
    path = out / "portrait_synthetic_reference.npz"
    if not path.is_file():
        head = load_head_model("builtin")
        h = held_out_identity(head, 0, PRESETS["small"].total_frames, cfg.avatar_resolution, VIEW_RADIUS, VIEW_FOV)
        held_out_reference(h, head.name).save(path)
    return str(path)


def _portrait_model(cfg: DemoConfig) -> Path:
    return Path(cfg.portrait_model) if cfg.portrait_model else DEFAULT_PORTRAIT


def _portrait_stage(cfg: DemoConfig, reference: str, folder: Path, log) -> dict:
    """``morph4d portrait REFERENCE`` with the IM-Portrait default; a previous run of other weights is deleted."""
    model = _portrait_model(cfg)
    previous = read_json(folder / "run.json") if (folder / "run.json").is_file() else None
    if previous is not None and (previous.get("weights") != weights_digest(model)
                                 or previous.get("run_version") != PORTRAIT_RUN_VERSION):
        log(f"IM-Portrait's weights or morph4d changed since the last demo in {folder}: starting afresh")
        shutil.rmtree(folder)
    log(f"IM-Portrait: {reference} -> {folder}")
    return run_portrait(PortraitConfig(reference=reference, out=str(folder), model=str(model),
                                       animation=cfg.animation, frames=cfg.portrait_frames,
                                       steps=cfg.portrait_steps), log=log)


def _avatar_stage(cfg: DemoConfig, out: Path, log) -> dict:
    """MVP4D end to end on a held-out synthetic person (seed 900000: never trained on): its render from a
    reference camera is the portrait -> ``morph4d avatar`` (multi-view videos from the embedded default,
    fitted Gaussian avatar, renders, .ply, viewer)."""
    head = load_head_model("builtin")
    ref_path = out / "avatar" / "reference.npz"
    _fresh(cfg, out / "avatar", log)
    if not ref_path.is_file():
        h = held_out_identity(head, 0, PRESETS["small"].total_frames, cfg.avatar_resolution, VIEW_RADIUS, VIEW_FOV)
        held_out_reference(h, head.name).save(ref_path)
        write_png(out / "avatar" / "reference.png", h.reference_image.permute(1, 2, 0))
    log(f"reference portrait (held-out synthetic person): {out / 'avatar' / 'reference.png'}")
    return _run(cfg, str(ref_path), out / "avatar", log)
