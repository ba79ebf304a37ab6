"""The demo job: the head model, animated, rendered from an orbit of cameras -> MP4 + contact sheet,
and the MVP4D conditioning maps of the same animation as channel grids.

This is the most complete pipeline that exists so far; later stages (generation, 4D fitting) extend it
until it runs photo -> avatar.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.cameras import orbit_cameras
from morph4d.heads import load_head_model
from morph4d.heads.animation import get_animation
from morph4d.io import write_json
from morph4d.render.shade import shade_mesh
from morph4d.video import grid, write_mp4, write_png

HEAD_CENTRE = (0.0, -0.01, 0.0)  # look-at target: between the ears, about nose height (m)


@dataclass(frozen=True)
class DemoConfig:
    out: str = "out/demo"
    head: str = "builtin"
    flame_path: str | None = None
    animation: str = "talk"
    frames: int = 49
    fps: float = 25.0
    resolution: int = 256
    radius: float = 0.75          # camera distance (m)
    fov: float = 26.0             # vertical field of view (deg): the head fills ~80% of the frame
    sheet_views: int = 8          # contact sheet: views around the head (rows) ...
    sheet_frames: int = 6         # ... times frames of the animation (columns)
    sheet_resolution: int = 160
    conditioning: bool = True     # also write the MVP4D conditioning grids (needs frames = 1 + 4k)
    conditioning_resolution: int = 256
    avatar: bool = True           # synthetic person -> fitted Gaussian avatar -> re-animated orbit video
    avatar_views: int = 8
    avatar_frames: int = 5
    avatar_resolution: int = 64
    avatar_iterations: int = 800

    def check(self) -> None:
        for name in ("frames", "resolution", "sheet_views", "sheet_frames", "sheet_resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 1.0 <= self.fov <= 120.0:
            raise ValueError(f"--fov must be in [1, 120] degrees, got {self.fov}")


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
    colors = _colors(model)
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
    # 3. the MVP4D conditioning maps of the same animation, as channel grids (MVP4D Fig. S9)
    if cfg.conditioning and (cfg.frames - 1) % 4 == 0:
        from morph4d.conditioning_viz import VizConfig, run_viz
        viz = run_viz(VizConfig(out=str(out / "conditioning"), animation=cfg.animation, frames=cfg.frames,
                                head=cfg.head, flame_path=cfg.flame_path, resolution=cfg.conditioning_resolution),
                      log=lambda *_: None)
        paths["conditioning"] = Path(viz["overview"])
        log(f"wrote {viz['overview']} and {viz['channels']}")
    # 4. a synthetic person (held-out seed) -> Gaussian avatar fitted to 8 views -> re-animated video
    if cfg.avatar and cfg.head == "builtin":
        paths["avatar_video"] = _avatar_stage(cfg, anim, out, log)
    write_json(paths["config"], {"demo": asdict(cfg), "head_model": model.describe(),
                                 "seconds": round(time.perf_counter() - start, 2)})
    return {k: str(p) for k, p in paths.items()}


def _avatar_stage(cfg: DemoConfig, anim, out: Path, log) -> Path:
    """Render a held-out synthetic identity (ground truth, 8 frontal views), fit bound Gaussians to it, and
    play the demo's animation on the fitted avatar (re-animation: the avatar never saw this animation)."""
    from morph4d.data.identity import EVAL_SEEDS
    from morph4d.data.synth import SynthConfig, synthesize
    from morph4d.fit import FitConfig, evaluate, fit_sequence, render_avatar
    data = out / "avatar_data"
    names = synthesize(SynthConfig(out=str(data), identities=1, modality="multiview_video", views=cfg.avatar_views,
                                   frames=cfg.avatar_frames, resolution=cfg.avatar_resolution, split="eval",
                                   first_seed=EVAL_SEEDS.start, progress=False), log=lambda *_: None)
    seq = data / names[0]
    fit_sequence(seq, out / "avatar", FitConfig(iterations=cfg.avatar_iterations, log_every=100), log=log)
    log(f"fitted avatar: mean PSNR {evaluate(seq, out / 'avatar'):.2f} dB over its {cfg.avatar_views} views")
    from morph4d.data.format import read_sequence
    shape = read_sequence(seq).params.shape
    params = anim.params.replace(shape=shape)
    F = anim.num_frames
    phase = torch.arange(F, dtype=torch.float64) / F
    # sweep the frontal range the avatar was fitted on (+-50 deg azimuth, as MVP4D's evaluation trajectory)
    cams = orbit_cameras(50.0 * torch.sin(2 * torch.pi * phase), 10.0 * torch.sin(4 * torch.pi * phase), cfg.radius, cfg.fov,
                         cfg.avatar_resolution * 2, cfg.avatar_resolution * 2, target=HEAD_CENTRE)
    frames = render_avatar(out / "avatar", params, cams)
    path = out / "avatar.mp4"
    write_mp4(path, frames, fps=anim.fps)
    log(f"wrote {path}")
    return path


def _colors(model) -> torch.Tensor:
    if model.name == "builtin":
        from morph4d.heads.builtin import vertex_colors
        return vertex_colors(model)
    colors = torch.tensor([0.86, 0.66, 0.55]).repeat(model.num_vertices, 1)
    if "eyes" in model.vertex_groups:
        colors[model.vertex_groups["eyes"]] = torch.tensor([0.93, 0.92, 0.90])
    return colors
