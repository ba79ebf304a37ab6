"""``morph4d avatar``: one tracked portrait -> a re-animatable 4D Gaussian avatar, in one resumable command.

MVP4D's whole pipeline (§3-4): [photo -> tracked reference (``morph4d track``)] -> conditioning + sampling
plan -> multi-view videos
(``generate``) -> Gaussians bound to the head mesh fitted to them (``fit``) -> renders (the fitted
animation replayed from an orbiting camera, and a NEW animation the avatar never saw) + a 3DGS ``.ply`` +
the WebGL viewer folder. Outputs in ``OUT``::

    pipeline.json        the resolved configuration (a rerun with another one is refused)
    track/               a photo given as the reference: reference.npz + overlay.png (morph4d track)
    drive/               --drive VIDEO: animation.npz + overlay.mp4 (morph4d track), the re-animation
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

from morph4d.avatar.fit import FitConfig, fit_sequence
from morph4d.avatar.render import render_video
from morph4d.avatar.viewer import export
from morph4d.conditioning.projection import PROJECTION_VERSION
from morph4d.errors import Morph4DError
from morph4d.generation.generate import GenerateConfig, prepare_generation
from morph4d.generation.videos import MANIFEST
from morph4d.heads.animation import get_animation
from morph4d.io import input_key, write_json
from morph4d.validate import read_json

RUN_VERSION = 7   # of the run folder; 2: the stage layout (plan/head fields, plan version 2); 3: anchored generation;
#                   4: the reference image in the fit (issue 17); pipeline.json also records PROJECTION_VERSION;
#                   5: input files identified by content (io.input_key), not by path; 6: the anchor's weight is
#                   the projection's confidence squared (generation.generate.ANCHOR_POWER); 7: the projection
#                   composited into the decoded views (MultiViewGenerator.composite)


@dataclass(frozen=True)
class AvatarConfig:
    reference: str                       # tracked reference .npz (morph4d/generation/reference.py) or a photo
    out: str
    model: str | None = None             # model folder (None: the embedded default)
    animation: str = "talk"              # drives the generated videos (the avatar's fitted sequence)
    plan: str = "small"                  # sampling-plan preset (generation.plan.PRESETS)
    head: str = "builtin"                # head model: "builtin" or "flame" (with flame_path)
    flame_path: str | None = None
    guidance: str = "multiview"
    seed: int = 0
    key_steps: int | None = None
    other_steps: int | None = None
    anchor: bool = True                  # sampling anchored to the reference projection (GenerateConfig.anchor)
    fit: FitConfig = field(default_factory=FitConfig)
    reanimate: str = "surprise"          # a built-in animation the avatar was not fitted on
    render_frames: int = 49
    render_resolution: int = 128
    drive: str | None = None             # a driving video: tracked, it re-animates the avatar (replaces reanimate)
    reference_res: int = 64              # a photo's reference crop: the generation's resolution (64: embedded default)
    embedding: str | None = None         # landmark embedding for tracking (FLAME needs one)


def _stage(log, name: str, path: Path) -> bool:
    """True when ``path`` (the stage's final output) already exists: the stage is skipped."""
    if path.exists():
        log(f"[{name}] done already: {path}")
        return True
    log(f"[{name}] ...")
    return False


def run_avatar(cfg: AvatarConfig, log=print) -> dict:
    """Run (or resume) every stage of the module docstring; returns the output paths."""
    out = Path(cfg.out)
    from morph4d.tracking.run import TrackConfig, is_video, run_track
    if cfg.drive is not None and not is_video(cfg.drive):
        raise Morph4DError(f"--drive {cfg.drive}: expected a video file (MP4, MOV, MKV, WebM, AVI, ...)")
    reference, reanimate = cfg.reference, cfg.reanimate
    # 0. tracking: a photo becomes the tracked reference, a driving video the re-animation (each skipped when done)
    if Path(cfg.reference).suffix.lower() != ".npz":
        reference = str(out / "track" / "reference.npz")
        if not _stage(log, "track", Path(reference)):
            run_track(TrackConfig(cfg.reference, str(out / "track"), cfg.reference_res, cfg.head, cfg.flame_path,
                                  cfg.embedding), log=log)
    if cfg.drive is not None:
        reanimate = str(out / "drive" / "animation.npz")
        if not _stage(log, "track video", Path(reanimate)):
            run_track(TrackConfig(cfg.drive, str(out / "drive"), cfg.reference_res, cfg.head, cfg.flame_path,
                                  cfg.embedding), log=log)
    # check every input before any work: plan preset, head model, reference, animations, model folder
    generation = prepare_generation(reference, cfg.animation, GenerateConfig(
        preset=cfg.plan, guidance=cfg.guidance, seed=cfg.seed, key_steps=cfg.key_steps, other_steps=cfg.other_steps,
        anchor=cfg.anchor),
        head=cfg.head, flame_path=cfg.flame_path, model=cfg.model)
    get_animation(reanimate, generation.head, cfg.render_frames).check_model(generation.head)
    cfg.fit.check()
    if not (out / "generated" / MANIFEST).is_file():
        generation.models()   # a broken model folder is refused before the run folder is created
    state = json.loads(json.dumps(asdict(cfg)))
    for key in ("reference", "drive", "animation", "reanimate", "flame_path", "embedding"):
        state[key] = input_key(state[key])       # files by content: a moved run folder or input is the same run
    state.pop("model")                           # the weights by content instead:
    state["model_weights"] = generation.identity["model_weights"]  # retrained weights: another run
    state["run_version"] = RUN_VERSION
    state["projection_version"] = PROJECTION_VERSION   # another make of the projection: its generation is stale
    state.pop("out")
    cfg_file = out / "pipeline.json"
    if cfg_file.is_file() and read_json(cfg_file) != state:
        raise Morph4DError(f"{out} holds a run with another configuration (pipeline.json differs); use another "
                           f"--out folder or delete it")
    write_json(cfg_file, state)
    t0 = time.perf_counter()
    times = {}
    paths = {"generated": out / "generated" / MANIFEST, "avatar": out / "avatar" / "avatar.safetensors",
             "video": out / "avatar.mp4", "reanimated": out / "reanimated.mp4", "ply": out / "avatar.ply",
             "viewer": out / "viewer" / "index.html"}
    # 1-2. conditioning + sampling plan -> multi-view videos
    if not _stage(log, "generate", paths["generated"]):
        t = time.perf_counter()
        generation.run(out / "generated", log=log)
        times["generate"] = time.perf_counter() - t
    # 3. 4D fit
    if not _stage(log, "fit", paths["avatar"]):
        t = time.perf_counter()
        fit_sequence(out / "generated", out / "avatar", cfg.fit, flame_path=cfg.flame_path, log=log)
        times["fit"] = time.perf_counter() - t
    # 4. renders, export, viewer
    t = time.perf_counter()
    if not _stage(log, "render", paths["video"]):
        render_video(out / "avatar", paths["video"], "fitted", cfg.render_frames, cfg.render_resolution, orbit=True,
                     flame_path=cfg.flame_path)
    if not _stage(log, "reanimate", paths["reanimated"]):
        render_video(out / "avatar", paths["reanimated"], reanimate, cfg.render_frames, cfg.render_resolution,
                     orbit=True, flame_path=cfg.flame_path)
    if not _stage(log, "export", paths["ply"]):
        export(out / "avatar", paths["ply"], "ply", "fitted", frame=0, flame_path=cfg.flame_path)
    if not _stage(log, "viewer", paths["viewer"]):
        export(out / "avatar", out / "viewer", "html", "fitted", flame_path=cfg.flame_path)
    times["render_export_viewer"] = time.perf_counter() - t
    if times:
        write_json(out / "timings.json", {**{k: round(v, 1) for k, v in times.items()},
                                          "total_this_call": round(time.perf_counter() - t0, 1)})
    return {k: str(p) for k, p in paths.items()}


__all__ = ["RUN_VERSION", "AvatarConfig", "run_avatar"]
