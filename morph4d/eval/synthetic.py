"""The synthetic benchmark (``morph4d eval --synthetic``): held-out identities with exact ground truth, our
outputs and the baselines side by side in one table (issue 19 §3).

For each held-out identity (``data.heldout``: seeds 900000+, never trained on): the ground truth (8 views of
``view_set("small")`` x 25 frames at the model's resolution) is written as a dataset sequence with its
reference direction in meta.json; then four runs, each scored by ``run.evaluate`` like any user's run:

* **generated**: ``morph4d generate``'s small plan from the reference render (the MMVDM, multi-view CFG);
* **reference projection**: the reference's pixels projected onto the true geometry (``baselines``; here the scene's
  head and hair meshes);
* **oracle avatar**: the Gaussian avatar fitted to the ground-truth videos of ``TRAIN_VIEWS`` (what a capture rig
  would give), rendered at all 8 views from the true parameters;
* **avatar**: the same fit on the generated videos (the one-photo avatar), rendered the same way.
The two views outside ``TRAIN_VIEWS`` are novel for both avatars. Each stage's output stays in the run folder and
is reused when present (a killed benchmark resumes); ``report.*`` are written at the end, over all identities.

``morph4d quality`` is this benchmark with a preset (``quality.QualityConfig``): no avatars, the fast metrics,
plus two model-side measurements scored the same way: the autoencoder's reconstruction PSNR on held-out windows,
and MVP4D's Table 7 ablation (guidance none / CFG / multi-view CFG, V = 8 vs V = 4) on one 17-frame window of
the first ``ablation_identities`` identities, scored against the first 17 ground-truth frames.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, view_set
from morph4d.conditioning.projection import project_reference, project_with_confidence, projection_options
from morph4d.data.format import SequenceWriter, mix_seed
from morph4d.data.heldout import HeldOut, ground_truth, held_out_identity, validation_seeds
from morph4d.data.identity import EVAL_SEEDS
from morph4d.data.loader import MultiViewWindows, WindowConfig
from morph4d.data.scene import scene_vertices
from morph4d.data.synth import SynthConfig, head_crops, synthesize
from morph4d.errors import Morph4DError
from morph4d.eval.baselines import fit_avatar
from morph4d.eval.inputs import first_frames, read_run, read_truth
from morph4d.eval.run import EvalConfig, Tools, evaluate, summarise
from morph4d.generation.generate import GenerateConfig, MultiViewGenerator, run_generate
from morph4d.generation.plan import PRESETS, Job
from morph4d.generation.reference import held_out_reference
from morph4d.generation.videos import read_videos
from morph4d.heads import load_head_model
from morph4d.heads.animation import Animation
from morph4d.metrics import psnr
from morph4d.video import grid, write_png

TRAIN_VIEWS = (0, 1, 2, 3, 4, 5)   # of view_set("small"): the avatars never see views 6 and 7 (+-20 az, -10 el)
HELD_OUT_FRAMES = (2, 6, 10, 14, 18, 22)   # of the 25 frames: no avatar sees their images (issue 17 §4)
AVATAR_TRAIN_FRAMES = tuple(f for f in range(PRESETS["small"].total_frames) if f not in HELD_OUT_FRAMES)
RUN_NAMES = ("generated", "reference projection", "oracle avatar", "avatar")


@dataclass(frozen=True)
class SyntheticConfig:
    identities: int = 2
    resolution: int = 64
    fit_iterations: int = 600      # the avatars' fit (FIT_PRESETS["demo"] runs 1200; halved for the 10-min budget)
    seed: int = 0                  # the generation plan's sampling seed (never tuned)
    first_seed: int | None = None  # None: the held-out identities (seeds 900000 + k); else validation seeds
    like_held_out: bool = False    # validation seeds with the held-out identities' hair styles (``validation_seeds``)
    avatars: bool = True           # the oracle avatar and our avatar (two fits per identity)
    avatar_identities: int | None = None  # None: every identity fits the avatars, in the main table; a number: the
                                          # first ones do, in their own section (``quality``, like the ablation)
    ablation_identities: int = 0   # of the identities, how many also run MVP4D's Table 7 ablation (``quality``)
    ae_windows: int = 0            # held-out windows for the autoencoder's reconstruction PSNR (``quality``)
    key_steps: int | None = None   # DDIM steps (default: the small plan's)
    other_steps: int | None = None
    samples: bool = True           # PNG grids (generated / truth / baseline rows) under out/samples
    unanchored: bool = False       # also MVP4D's sampler without the projection anchor and the anchor's own
                                   # pixels (the head-mesh projection with its matte sheet) as runs (``quality``)

    def check(self) -> None:
        if not 1 <= self.identities <= len(EVAL_SEEDS) or not 0 <= self.ablation_identities <= self.identities \
                or not 0 <= (self.avatar_identities or 0) <= self.identities:
            raise Morph4DError(f"identities must be in 1..{len(EVAL_SEEDS)} and ablation / avatar identities in "
                               f"0..identities, got {self.identities}, {self.ablation_identities}, "
                               f"{self.avatar_identities}")
        if not 0 <= self.ae_windows <= len(EVAL_SEEDS):
            raise Morph4DError(f"ae_windows must be in 0..{len(EVAL_SEEDS)}, got {self.ae_windows}")
        if self.resolution % 8 or self.resolution < 16:
            raise Morph4DError(f"resolution must be a multiple of 8 and >= 16, got {self.resolution}")
        if self.fit_iterations < 1:
            raise Morph4DError(f"fit iterations must be >= 1, got {self.fit_iterations}")
        if self.like_held_out and self.first_seed is None:
            raise Morph4DError("like_held_out picks validation identities like the held-out ones: give first_seed too")
        if self.first_seed is not None:
            last = self.first_seed + max(self.identities, self.ae_windows) - 1
            if self.first_seed < 0 or (self.first_seed <= EVAL_SEEDS.stop - 1 and last >= EVAL_SEEDS.start):
                raise Morph4DError(f"--first-seed {self.first_seed}: validation seeds {self.first_seed}-{last} must "
                                   f"be >= 0 and outside the held-out seeds {EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1} "
                                   f"(leave --first-seed out for the held-out report)")


def write_truth(root: Path, h: HeldOut, head, cameras, frames: int) -> Path:
    """The held-out identity's ground truth as a dataset sequence (skipped when already written)."""
    name = f"heldout{h.seed}"
    if (root / name / "meta.json").is_file():
        return root / name
    images, alpha = ground_truth(h, cameras, frames)                         # (V, F, 3, H, W), (V, F, 1, H, W)
    views = [f"view{v}" for v in range(len(cameras))]
    with SequenceWriter(root, name, views, frames, cameras.width, cameras.height) as w:
        for v in range(len(cameras)):
            for f in range(frames):
                w.write_frame(v, f, images[v, f].permute(1, 2, 0), alpha[v, f, 0])
        meta = {"modality": "multiview_video", "head_model": head.name, "fps": 25.0, "source": "synthetic",
                "identity_seed": h.seed, "split": "eval",
                "reference": {"azimuth": h.reference_azimuth, "elevation": 0.0}}
        w.finish(meta, cameras, h.params, head_crops(head, h.params, cameras, 2.0), 1.25, 2.0)
    return root / name


# ---------------------------------------------------------------------------------------------------
# the model-side parts: baseline, sampling plan, ablation window, autoencoder windows
# ---------------------------------------------------------------------------------------------------

ABLATIONS = (("none", 8), ("cfg", 8), ("multiview", 8), ("multiview", 4))


def reference_projection(h: HeldOut, cameras, frames: int, supersample: int = 2) -> torch.Tensor:
    """The baseline (module doc) of a held-out identity, on its true geometry (head and hair/glasses meshes):
    (V, F, 3, H, W)."""
    return project_reference(scene_vertices(h.scene, h.params)[:frames], h.scene.faces, h.reference_camera,
                             h.reference_image, cameras, supersample)


def mesh_projection(h: HeldOut, head, cameras, frames: int) -> torch.Tensor:
    """What the anchored sampler starts from (issue 17): the reference projected through the head model's mesh
    (the tracked geometry; no hair) with the matte sheet behind it and the mirror fill, (V, F, 3, H, W); not
    encoded. Rendered at ``project_with_confidence``'s 2x supersampling like the baseline (the sampler's own is
    ``CONDITIONING_SUPERSAMPLE``), so the two projection rows differ only in their geometry and the guesses the
    mirror fill adds where the reference does not see."""
    with torch.no_grad():
        verts = head(h.params)[:frames]
    return project_with_confidence(verts, head.faces, h.reference_camera, h.reference_image, cameras, sheet=True,
                                   **projection_options(head))[0]


def autoencoder_psnr(vae, resolution: int, windows: int, first_seed: int | None, head, data_root: Path,
                     log) -> dict:
    """Encode -> decode ``windows`` held-out windows (1 view x 9 frames at ``resolution``) of a fresh eval
    dataset (validation seeds from ``first_seed`` when given)."""
    synthesize(SynthConfig(out=str(data_root), identities=windows, views=2, frames=9,
                           resolution=resolution + resolution // 2, progress=False,
                           split="eval" if first_seed is None else "train", first_seed=first_seed),
               model=head, log=lambda *a: None)
    ds = MultiViewWindows(data_root, WindowConfig(views=1, frames=9, resolution=resolution, seed=0), model=head)
    scores = []
    with torch.no_grad():
        for i in range(len(ds)):
            video = ds[i]["images"][None]                                   # (1, 1, 9, 3, H, W)
            recon = vae.decode(vae.encode(video))
            scores.append(psnr(recon.clamp(0, 1), video))
    log(f"autoencoder: PSNR {sum(scores) / len(scores):.2f} dB over {len(scores)} held-out windows")
    return {"psnr": sum(scores) / len(scores), "windows": len(scores), "per_window": scores}


def generate_plan(model, vae, head, h: HeldOut, run_dir: Path, weights: str, seed: int = 0,
                  key_steps: int | None = None, other_steps: int | None = None, anchor: bool = True) -> torch.Tensor:
    """The full ``small`` sampling plan from the reference: (V, F, 3, H, W) frames;
    ``weights``: the model's ``weights_digest`` (a run of other weights in ``run_dir`` is refused)."""
    reference = held_out_reference(h, head.name)
    animation = Animation(h.params, 25.0, head.name, f"heldout{h.seed}")
    gcfg = GenerateConfig(preset="small", guidance="multiview", seed=seed, key_steps=key_steps,
                          other_steps=other_steps, anchor=anchor)
    run_generate(run_dir, model, vae, head, reference, animation, gcfg,
                 {"quality": h.seed, "reference_azimuth": h.reference_azimuth, "model_weights": weights},
                 log=lambda *a: None)
    return read_videos(run_dir).images


def generate_window(model, vae, head, h: HeldOut, cameras, angles, guidance_kind: str, group: int,
                    steps: int, seed: int) -> torch.Tensor:
    """One 17-frame window of every view, generated ``group`` views at a time (mode 1), anchored and composited
    as ``morph4d generate`` does: (V, 17, 3, H, W)."""
    Fw = 17
    reference = held_out_reference(h, head.name)
    gen = MultiViewGenerator(model, vae, head, reference, Animation(h.params, 25.0, head.name), cameras, angles,
                             Fw, guidance_kind)
    V = len(cameras)
    h8 = cameras.height // 8
    out = []
    for start in range(0, V, group):
        views = list(range(start, min(V, start + group)))
        shape = (len(views), (Fw - 1) // 4 + 1, 16, h8, h8)
        g = torch.Generator().manual_seed(mix_seed("quality-window", seed, h.seed, start))
        lat = gen(Job(f"g{start}", views, 0, 1, steps), torch.zeros(shape), torch.zeros(shape[:2], dtype=torch.bool), g)
        out.append(torch.stack([gen.composite(gen.decode(lat[k]).clamp(0, 1), v) for k, v in enumerate(views)]))
    return torch.cat(out)


def write_png_grid(path: Path, *videos: torch.Tensor) -> None:
    """Rows: each video's views at its middle frame (generated / ground truth / baseline)."""
    f = min(v.shape[1] for v in videos) // 2
    tiles = torch.cat([v[:, f] for v in videos]).permute(0, 2, 3, 1)       # (rows * V, H, W, 3)
    write_png(path, grid(tiles, cols=videos[0].shape[0], pad=1))


# ---------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------

def run_synthetic(out, model_dir: str | None = None, cfg: SyntheticConfig = SyntheticConfig(),
                  eval_cfg: EvalConfig = EvalConfig(), log=print) -> dict:
    """The benchmark (module doc) -> ``out/report.*``; returns the report. Every input is checked before
    anything is written."""
    from morph4d.models.folder import load_models, weights_digest

    cfg.check()
    t0 = time.perf_counter()
    out = Path(out)
    eval_cfg = eval_cfg.resolved()
    tools = Tools(eval_cfg)
    head = load_head_model("builtin")
    seeds = ([None] * cfg.identities if cfg.first_seed is None else
             validation_seeds(head, cfg.first_seed, cfg.identities, cfg.like_held_out))
    model, vae = load_models(model_dir)
    digest = weights_digest(model_dir)
    vs = view_set("small")
    cameras = vs.cameras(VIEW_RADIUS, VIEW_FOV, cfg.resolution, cfg.resolution)
    frames = PRESETS["small"].total_frames
    extra = {}
    if cfg.ae_windows:
        extra["autoencoder"] = autoencoder_psnr(vae, cfg.resolution, cfg.ae_windows, cfg.first_seed, head,
                                                out / "ae_data", log)
    per_identity, per_ablation, per_avatar = {}, {}, {}
    avatar_ids = (cfg.identities if cfg.avatar_identities is None else cfg.avatar_identities) if cfg.avatars else 0
    for k in range(cfg.identities):
        h = held_out_identity(head, k, frames, cfg.resolution, VIEW_RADIUS, VIEW_FOV, cfg.first_seed, seeds[k])
        log(f"[eval] identity {h.seed} (reference azimuth {h.reference_azimuth:+.0f})")
        truth_dir = write_truth(out / "truth", h, head, cameras, frames)
        truth = read_truth(truth_dir)
        run_dir = out / "runs" / str(h.seed)
        gen_dir = run_dir / "generated"
        generate_plan(model, vae, head, h, gen_dir, digest, cfg.seed, cfg.key_steps, cfg.other_steps)
        base = reference_projection(h, cameras, frames)
        loaded = {"generated": read_run("generated", gen_dir, truth), "reference projection": (base, "baseline")}
        if cfg.unanchored:
            plain_dir = run_dir / "generated_no_anchor"
            generate_plan(model, vae, head, h, plain_dir, digest, cfg.seed, cfg.key_steps, cfg.other_steps, False)
            loaded = {"generated": loaded["generated"],
                      "generated, no anchor": read_run("generated, no anchor", plain_dir, truth),
                      "reference projection": loaded["reference projection"],
                      "head-mesh projection": (mesh_projection(h, head, cameras, frames), "baseline")}
        avatars = {}
        if k < avatar_ids:
            for name, data in (("oracle avatar", truth_dir), ("avatar", gen_dir)):
                fitted = fit_avatar(data, run_dir / name.replace(" ", "_"), cfg.fit_iterations, TRAIN_VIEWS, log,
                                    AVATAR_TRAIN_FRAMES)
                avatars[name] = read_run(name, fitted, truth)
        if cfg.avatar_identities is None:
            loaded.update(avatars)
        per_identity[h.seed] = evaluate(truth, loaded, tools, {n: str(run_dir) for n in loaded}, log)
        if avatars and cfg.avatar_identities is not None:
            per_avatar[h.seed] = evaluate(truth, avatars, tools, {n: str(run_dir) for n in avatars}, log)
        if cfg.samples:
            write_png_grid(out / "samples" / f"{h.seed}.png", *(x for x, _ in loaded.values()), truth.images)
        if k < cfg.ablation_identities:
            steps = cfg.key_steps or PRESETS["small"].key_steps
            windows = {f"{kind}, V={group}": (generate_window(model, vae, head, h, cameras, (vs.azimuth, vs.elevation),
                                                              kind, group, steps, cfg.seed), "generated")
                       for kind, group in ABLATIONS}
            short = first_frames(truth, next(iter(windows.values()))[0].shape[1])
            per_ablation[h.seed] = evaluate(short, windows, tools, {}, log)
        log(f"[eval] identity {h.seed} done ({time.perf_counter() - t0:.0f} s)")
    report = merge(per_identity, eval_cfg)
    report.update(extra)
    if per_ablation:
        report["ablation"] = merge(per_ablation, eval_cfg)
    if per_avatar:
        report["avatars"] = merge(per_avatar, eval_cfg)
    if avatar_ids:
        report["avatar_gap"] = avatar_gap(report.get("avatars", report), eval_cfg.metrics)
    report["config"] = {"synthetic": asdict(cfg), "eval": asdict(eval_cfg),
                        "model": str(Path(model_dir).resolve()) if model_dir else "embedded-default"}
    report["seconds"] = time.perf_counter() - t0
    from morph4d.eval.report import write_report
    write_report(out, report)
    return report


def avatar_gap(report: dict, metrics) -> dict:
    """Issue 17 §4: the oracle avatar (fitted to the ground truth's videos) against the one-photo avatar (fitted
    to the generated ones), both scored where neither was fitted: the views outside ``TRAIN_VIEWS`` at every
    frame and the ``HELD_OUT_FRAMES`` of every view. ``gap``: oracle minus ours (PSNR in dB; positive = the
    oracle is better)."""
    seen_views = {f"view{v}" for v in TRAIN_VIEWS}

    def held(row: dict) -> bool:                   # merged rows name views "SEED/viewN"
        return row["view"].split("/")[-1] not in seen_views or row["frame"] in HELD_OUT_FRAMES

    def held_out(run: dict, key: str) -> float:
        vals = [r[key] for r in run["rows"] if held(r)]
        return sum(vals) / len(vals)
    runs = report["runs"]
    cells = sum(map(held, runs["avatar"]["rows"]))
    out = {"cells": cells, "identities": len(report["identities"])}
    for key in (m for m in ("psnr", "ssim", "l1") if m in metrics):
        oracle, ours = held_out(runs["oracle avatar"], key), held_out(runs["avatar"], key)
        out[key] = {"oracle avatar": oracle, "avatar": ours, "gap": oracle - ours}
    return out


def merge(per_identity: dict, cfg: EvalConfig) -> dict:
    """One report over identities: each run's views and frames pooled (views renamed ``SEED/VIEW``), frames
    averaged over identities; run-level numbers (RE, FID, FVD) averaged."""
    first = next(iter(per_identity.values()))
    runs = {}
    for name in first["runs"]:
        rows, views, frames, run = [], [], [], {}
        for seed, rep in per_identity.items():
            r = rep["runs"][name]
            rows += [{**x, "view": f"{seed}/{x['view']}"} for x in r["rows"]]
            views += [{**x, "view": f"{seed}/{x['view']}"} for x in r["views"]]
            for key, val in r["run"].items():
                if isinstance(val, (int, float)):
                    run.setdefault(key, []).append(val)
        n = len(per_identity)
        for f in range(len(first["runs"][name]["frames"])):
            keys = first["runs"][name]["frames"][f].keys()
            frames.append({k: sum(rep["runs"][name]["frames"][f][k] for rep in per_identity.values()) / n
                           for k in keys})
        run = {k: sum(v) / len(v) for k, v in run.items()}
        scored = {"rows": rows, "views": views, "frames": frames, "run": run}
        runs[name] = {"kind": first["runs"][name]["kind"], **scored, "summary": summarise(scored, cfg.metrics)}
    t = first["truth"]
    truth = {**t, "name": f"{len(per_identity)} held-out identities ({', '.join(map(str, per_identity))})",
             "reference": "each identity's reference camera (meta.json)"}
    return {"truth": truth, "metrics": first["metrics"], "notes": first["notes"], "runs": runs,
            "identities": {str(s): {n: r["summary"] for n, r in rep["runs"].items()}
                           for s, rep in per_identity.items()}}


__all__ = ["TRAIN_VIEWS", "HELD_OUT_FRAMES", "AVATAR_TRAIN_FRAMES", "RUN_NAMES", "ABLATIONS", "SyntheticConfig",
           "avatar_gap", "mesh_projection", "write_truth", "reference_projection", "generate_plan", "generate_window",
           "autoencoder_psnr", "write_png_grid", "run_synthetic", "merge"]
