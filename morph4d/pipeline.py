"""``morph4d avatar``: one tracked portrait -> a re-animatable 4D Gaussian avatar, in one resumable command.

MVP4D's whole pipeline (§3-4): reference -> conditioning + sampling plan -> multi-view videos
(``generate``) -> Gaussians bound to the head mesh fitted to them (``fit``) -> renders (the fitted
animation replayed from an orbiting camera, and a NEW animation the avatar never saw) + a 3DGS ``.ply`` +
the WebGL viewer folder. Outputs in ``OUT``::

    pipeline.json        the resolved configuration (a rerun with another one is refused)
    generated/           multi-view videos + manifest.json (morph4d generate; resumable job by job)
    avatar/              avatar.safetensors (morph4d fit; resumable from its checkpoint)
    avatar.mp4           the fitted animation, orbiting camera
    reanimated.mp4       ``reanimate`` (a built-in animation) driving the avatar
    avatar.ply           frame 0 as standard 3D Gaussian splatting
    viewer/              index.html + avatar.m4da (serve with `morph4d view OUT/avatar` or any HTTP server)

Every stage is skipped when its output exists, so a killed run continues where it stopped (generation
and fitting also resume inside their stage); each output file is written atomically by its stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morph4d.fit import FitConfig
from morph4d.io import write_json


@dataclass(frozen=True)
class AvatarConfig:
    reference: str                       # tracked reference .npz (morph4d/reference.py)
    out: str
    model: str | None = None             # model folder (None: the embedded default)
    animation: str = "talk"              # drives the generated videos (the avatar's fitted sequence)
    views: str = "small"                 # sampling-plan preset (plan.PRESETS)
    guidance: str = "multiview"
    seed: int = 0
    key_steps: int | None = None
    other_steps: int | None = None
    fit: FitConfig = field(default_factory=FitConfig)
    reanimate: str = "surprise"          # a built-in animation the avatar was not fitted on
    render_frames: int = 49
    render_resolution: int = 128


def _stage(log, name: str, path: Path) -> bool:
    """True when ``path`` (the stage's final output) already exists: the stage is skipped."""
    if path.exists():
        log(f"[{name}] done already: {path}")
        return True
    log(f"[{name}] ...")
    return False


def run_avatar(cfg: AvatarConfig, log=print) -> dict:
    """Run (or resume) every stage of the module docstring; returns the output paths."""
    from morph4d.fit import fit_sequence, render_video
    from morph4d.generate import GenerateConfig, load_models, run_generate, weights_digest
    from morph4d.heads import load_head_model
    from morph4d.heads.animation import get_animation
    from morph4d.plan import PRESETS
    from morph4d.reference import load_reference
    from morph4d.viewer import export
    out = Path(cfg.out)
    if cfg.views not in PRESETS:
        raise ValueError(f"unknown --views preset '{cfg.views}'; expected one of {sorted(PRESETS)}")
    # check every input before any work: reference, animations, model folder
    head = load_head_model("builtin")
    reference = load_reference(cfg.reference, head)
    animation = get_animation(cfg.animation, head, PRESETS[cfg.views].total_frames)
    animation.check_model(head)
    get_animation(cfg.reanimate, head, cfg.render_frames).check_model(head)
    state = json.loads(json.dumps(asdict(cfg)))
    state["reference"] = str(Path(cfg.reference).resolve())
    state["model_weights"] = weights_digest(cfg.model)   # retrained weights = another run, never stale outputs
    state.pop("out")
    cfg_file = out / "pipeline.json"
    if cfg_file.is_file() and json.loads(cfg_file.read_text()) != state:
        raise ValueError(f"{out} holds a run with another configuration (pipeline.json differs); use another "
                         f"--out folder or delete it")
    write_json(cfg_file, state)
    t0 = time.perf_counter()
    times = {}
    paths = {"generated": out / "generated" / "manifest.json", "avatar": out / "avatar" / "avatar.safetensors",
             "video": out / "avatar.mp4", "reanimated": out / "reanimated.mp4", "ply": out / "avatar.ply",
             "viewer": out / "viewer" / "index.html"}
    # 1-2. conditioning + sampling plan -> multi-view videos
    if not _stage(log, "generate", paths["generated"]):
        model, vae = load_models(cfg.model)
        gcfg = GenerateConfig(preset=cfg.views, guidance=cfg.guidance, seed=cfg.seed, key_steps=cfg.key_steps,
                              other_steps=cfg.other_steps)
        identity = {"reference": state["reference"], "animation": cfg.animation,
                    "model": str(Path(cfg.model).resolve()) if cfg.model else "embedded-default", "head": head.name}
        run_generate(out / "generated", model, vae, head, reference, animation, gcfg, identity, log=log)
        times["generate"] = time.perf_counter() - t0
    # 3. 4D fit
    if not _stage(log, "fit", paths["avatar"]):
        t = time.perf_counter()
        fit_sequence(out / "generated", out / "avatar", cfg.fit, log=log)
        times["fit"] = time.perf_counter() - t
    # 4. renders, export, viewer
    if not _stage(log, "render", paths["video"]):
        render_video(out / "avatar", paths["video"], "fitted", cfg.render_frames, cfg.render_resolution, orbit=True)
    if not _stage(log, "reanimate", paths["reanimated"]):
        render_video(out / "avatar", paths["reanimated"], cfg.reanimate, cfg.render_frames, cfg.render_resolution,
                     orbit=True)
    if not _stage(log, "export", paths["ply"]):
        export(out / "avatar", paths["ply"], "ply", "fitted", frame=0)
    if not _stage(log, "viewer", paths["viewer"]):
        export(out / "avatar", out / "viewer", "html", "fitted")
    if times:
        write_json(out / "timings.json", {**{k: round(v, 1) for k, v in times.items()},
                                          "total_this_call": round(time.perf_counter() - t0, 1)})
    return {k: str(p) for k, p in paths.items()}


__all__ = ["AvatarConfig", "run_avatar"]
