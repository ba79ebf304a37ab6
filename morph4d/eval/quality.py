"""Quality report of a model folder (MMVDM + autoencoder) on held-out synthetic identities (issue 7).

``morph4d quality --out DIR [--model MODEL] [--identities N]`` measures, on identities with seeds
900000+ (``data.identity.EVAL_SEEDS``: the loader refuses them for training):

1. **autoencoder reconstruction**: PSNR of encode -> decode of held-out multi-view windows;
2. **generation vs ground truth**: one reference image (a render of the identity at frame 0 from a
   reference camera) -> ``morph4d generate``'s full sampling plan (``small``: 8 views x 25 frames) ->
   PSNR and SSIM of every generated frame against the ground-truth render of the same view and frame,
   binned by the view's angular distance from the reference camera, over the whole frame and, as MVP4D
   S3 measures, with both images masked by the ground truth's foreground (our renders' exact alpha where
   the paper runs a matting model; outside it both are white background); against the
   **reference-projection baseline**: the reference image projected onto the ground-truth geometry
   (head and hair/glasses meshes) at frame 0 and re-rendered at each view and frame; surface points the
   reference camera does not see get the mean colour of the points it sees;
3. **MVP4D Table 7 ablation** on one 17-frame window: no guidance, conventional CFG and multi-view CFG
   with all 8 views generated jointly, and multi-view CFG with the views generated 4 at a time (V = 4:
   two independent joint passes) against V = 8.

Reference cameras cycle through azimuths ``morph4d.data.heldout.REFERENCE_AZIMUTHS`` (elevation 0) so that the views cover
0-70 degrees from the reference. Nothing here is tuned on these identities; the report records what
comes out. For choices (presets, variants) run it on validation identities instead: ``--first-seed S``
(seeds S, S + 1, ...; never the held-out ones; pick seeds outside your training data — the embedded default
trained on 0-79 and 1000-1299, and its choices were made on 5000+). Writes ``report.json`` (every number)
and ``report.md`` (the tables of the README).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, angular_distance, view_set
from morph4d.data.format import mix_seed
from morph4d.data.heldout import HeldOut, ground_truth, held_out_identity
from morph4d.data.identity import EVAL_SEEDS
from morph4d.data.loader import MultiViewWindows, WindowConfig
from morph4d.data.scene import scene_vertices
from morph4d.data.synth import SynthConfig, synthesize
from morph4d.errors import Morph4DError
from morph4d.generation.generate import GenerateConfig, MultiViewGenerator, run_generate
from morph4d.generation.plan import PRESETS, Job
from morph4d.generation.reference import held_out_reference
from morph4d.generation.videos import read_videos
from morph4d.heads import load_head_model
from morph4d.heads.animation import Animation
from morph4d.io import atomic_path, write_json
from morph4d.mesh.raster import interpolate, rasterize
from morph4d.metrics import psnr, ssim
from morph4d.models.folder import load_models, weights_digest
from morph4d.video import grid, write_png

ANGLE_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 45.0), (45.0, 90.0))
ABLATIONS = (("none", 8), ("cfg", 8), ("multiview", 8), ("multiview", 4))


@dataclass(frozen=True)
class QualityConfig:
    identities: int = 6            # held-out identities (seeds 900000 + k)
    ablation_identities: int = 4   # of those, how many also run the Table 7 ablation
    resolution: int = 64           # the embedded default's resolution
    ae_windows: int = 8            # held-out 1 x 9-frame windows for the autoencoder PSNR
    seed: int = 0                  # sampling seed (the plan's; never tuned)
    key_steps: int | None = None   # DDIM steps (default: the small plan's 20 / 10)
    other_steps: int | None = None
    first_seed: int | None = None  # None: the held-out identities; else validation seeds first_seed + k

    def check(self) -> None:
        if not 1 <= self.identities <= len(EVAL_SEEDS) or not 0 <= self.ablation_identities <= self.identities:
            raise Morph4DError(f"identities must be in 1..{len(EVAL_SEEDS)} and ablation_identities in "
                               f"0..identities, got {self.identities}, {self.ablation_identities}")
        if not 1 <= self.ae_windows <= len(EVAL_SEEDS):
            raise Morph4DError(f"ae_windows must be in 1..{len(EVAL_SEEDS)}, got {self.ae_windows}")
        if self.resolution % 8 or self.resolution < 16:
            raise Morph4DError(f"resolution must be a multiple of 8 and >= 16, got {self.resolution}")
        if self.first_seed is not None:
            last = self.first_seed + max(self.identities, self.ae_windows) - 1
            if self.first_seed < 0 or (self.first_seed <= EVAL_SEEDS.stop - 1 and last >= EVAL_SEEDS.start):
                raise Morph4DError(f"--first-seed {self.first_seed}: validation seeds {self.first_seed}-{last} must "
                                   f"be >= 0 and outside the held-out seeds {EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1} "
                                   f"(leave --first-seed out for the held-out report)")


def reference_projection(h: HeldOut, cameras, frames: int, supersample: int = 2) -> torch.Tensor:
    """The baseline (module doc): (V, F, 3, H, W), rendered at ``supersample`` x and area-averaged."""
    verts = scene_vertices(h.scene, h.params)[:frames]                     # (F, N + M, 3)
    faces = h.scene.faces
    ref = h.reference_camera
    s, H, W = supersample, cameras.height, cameras.width
    # depth of what the reference camera sees at frame 0
    big_ref = ref.resized(ref.width * s, ref.height * s)
    r0 = rasterize(verts[0], faces, big_ref)
    cam_pts0 = verts[0] @ ref.R[0].T + ref.t[0]                             # (N + M, 3) reference camera frame
    ref_depth = interpolate(cam_pts0[:, 2:], faces, r0)[0, ..., 0]         # (sH, sW)
    ref_depth = torch.where(r0.mask[0], ref_depth, torch.full_like(ref_depth, float("inf")))
    big = cameras.resized(W * s, H * s)
    out = torch.empty(len(cameras), frames, 3, H, W)
    visible_colors = []
    results = []
    with torch.no_grad():
        for f in range(frames):
            r = rasterize(verts[f], faces, big)                             # (V, sH, sW)
            p0 = interpolate(cam_pts0, faces, r)                            # (V, sH, sW, 3): the point at frame 0
            uv = ref.K[0] @ p0.reshape(-1, 3).T                             # project into the reference camera
            u, v, z = uv[0] / uv[2].clamp(min=1e-6), uv[1] / uv[2].clamp(min=1e-6), p0.reshape(-1, 3)[:, 2]
            grid = torch.stack([2 * u / ref.width - 1, 2 * v / ref.height - 1], -1).view(1, 1, -1, 2)
            color = F.grid_sample(h.reference_image[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T
            dref = F.grid_sample(ref_depth[None, None].nan_to_num(posinf=1e6), grid, mode="nearest",
                                 align_corners=False)[0, 0, 0]
            seen = (z <= dref + 0.01) & (grid.view(-1, 2).abs() <= 1).all(-1) & r.mask.reshape(-1)
            visible_colors.append(color[seen])
            results.append((r.mask.reshape(-1), seen, color))
        fill = torch.cat(visible_colors).mean(0) if sum(len(c) for c in visible_colors) else torch.full((3,), 0.5)
        for f, (mask, seen, color) in enumerate(results):
            rgb = torch.where(seen[:, None], color, fill.expand_as(color))
            rgb = torch.where(mask[:, None], rgb, torch.ones_like(rgb))     # white background
            img = rgb.view(len(cameras), H * s, W * s, 3).permute(0, 3, 1, 2)
            out[:, f] = F.avg_pool2d(img, s) if s > 1 else img
    return out


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------

def per_view_scores(pred: torch.Tensor, gt: torch.Tensor, alpha: torch.Tensor, distances: torch.Tensor) -> list[dict]:
    """[{distance, psnr, ssim, psnr_masked, ssim_masked}] per view of (V, F, 3, H, W) videos over white;
    ``alpha`` (V, F, 1, H, W) is the ground truth's: "masked" composites both over white with it (MVP4D S3)."""
    pred = pred.clamp(0, 1)
    pred_m, gt_m = [alpha * x.clamp(0, 1) + (1 - alpha) for x in (pred, gt)]
    return [{"distance": float(distances[v]), "psnr": psnr(pred[v], gt[v]), "ssim": float(ssim(pred[v], gt[v])),
             "psnr_masked": psnr(pred_m[v], gt_m[v]), "ssim_masked": float(ssim(pred_m[v], gt_m[v]))}
            for v in range(len(pred))]


METRICS = ("psnr", "ssim", "psnr_masked", "ssim_masked")


def binned(rows: list[dict]) -> list[dict]:
    """Mean of each metric the per-view rows carry, in ``ANGLE_BINS`` of angular distance (empty bins omitted)."""
    out = []
    for lo, hi in ANGLE_BINS:
        sel = [r for r in rows if lo <= r["distance"] < hi]
        if sel:
            out.append({"bin": f"{lo:.0f}-{hi:.0f}", "views": len(sel),
                        **{m: _mean(sel, m) for m in METRICS if m in sel[0]}})
    return out


# ---------------------------------------------------------------------------------------------------
# the three measurements
# ---------------------------------------------------------------------------------------------------

def autoencoder_psnr(vae, cfg: QualityConfig, head, data_root: Path, log) -> dict:
    """Encode -> decode held-out windows (1 view x 9 frames at ``cfg.resolution``) of a fresh eval dataset."""
    synthesize(SynthConfig(out=str(data_root), identities=cfg.ae_windows, views=2, frames=9,
                           resolution=cfg.resolution + cfg.resolution // 2, progress=False,
                           split="eval" if cfg.first_seed is None else "train", first_seed=cfg.first_seed),
               model=head, log=lambda *a: None)
    ds = MultiViewWindows(data_root, WindowConfig(views=1, frames=9, resolution=cfg.resolution, seed=0), model=head)
    scores = []
    with torch.no_grad():
        for i in range(len(ds)):
            video = ds[i]["images"][None]                                   # (1, 1, 9, 3, H, W)
            recon = vae.decode(vae.encode(video))
            scores.append(psnr(recon.clamp(0, 1), video))
    log(f"autoencoder: PSNR {sum(scores) / len(scores):.2f} dB over {len(scores)} held-out windows")
    return {"psnr": sum(scores) / len(scores), "windows": len(scores), "per_window": scores}


def generate_plan(model, vae, head, h: HeldOut, cfg: QualityConfig, run_dir: Path,
                  weights: str) -> torch.Tensor:
    """The full ``small`` sampling plan from the reference: (V, F, 3, H, W) frames;
    ``weights``: the model's ``weights_digest`` (a run of other weights in ``run_dir`` is refused)."""
    reference = held_out_reference(h, head.name)
    animation = Animation(h.params, 25.0, head.name, f"heldout{h.seed}")
    gcfg = GenerateConfig(preset="small", guidance="multiview", seed=cfg.seed, key_steps=cfg.key_steps,
                          other_steps=cfg.other_steps)
    run_generate(run_dir, model, vae, head, reference, animation, gcfg,
                 {"quality": h.seed, "reference_azimuth": h.reference_azimuth, "model_weights": weights},
                 log=lambda *a: None)
    return read_videos(run_dir).images


def generate_window(model, vae, head, h: HeldOut, cameras, angles, guidance_kind: str, group: int,
                    steps: int, seed: int) -> torch.Tensor:
    """One 17-frame window of every view, generated ``group`` views at a time (mode 1): (V, 17, 3, H, W)."""
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
        out.append(torch.stack([gen.decode(lat[k]) for k in range(len(views))]))
    return torch.cat(out)


def run_quality(out: str | Path, model_dir: str | None = None, cfg: QualityConfig = QualityConfig(),
                log=print) -> dict:
    """All measurements (module doc) -> ``out/report.json`` and ``out/report.md``; returns the report. Runs on
    the threads the command configured (``morph4d.threads``; results depend on the count in their last bits)."""
    return _run_quality(out, model_dir, cfg, log)


def _run_quality(out: Path | str, model_dir: str | None, cfg: QualityConfig, log) -> dict:
    cfg.check()
    out = Path(out)
    t0 = time.perf_counter()
    model, vae = load_models(model_dir)
    digest = weights_digest(model_dir)
    head = load_head_model("builtin")
    report = {"config": asdict(cfg), "model": str(Path(model_dir).resolve()) if model_dir else "embedded-default"}
    write_json(out / "config.json", report)
    report["autoencoder"] = autoencoder_psnr(vae, cfg, head, out / "ae_data", log)
    vs = view_set("small")
    cameras = vs.cameras(VIEW_RADIUS, VIEW_FOV, cfg.resolution, cfg.resolution)
    frames = PRESETS["small"].total_frames
    gen_rows, base_rows, ablation = [], [], {f"{k}_V{v}": [] for k, v in ABLATIONS}
    for k in range(cfg.identities):
        h = held_out_identity(head, k, frames, cfg.resolution, VIEW_RADIUS, VIEW_FOV, cfg.first_seed)
        dist = angular_distance(vs.azimuth.double(), vs.elevation.double(),
                                torch.tensor(h.reference_azimuth, dtype=torch.float64),
                                torch.tensor(0.0, dtype=torch.float64))
        gt, alpha = ground_truth(h, cameras, frames)
        pred = generate_plan(model, vae, head, h, cfg, out / "runs" / f"{h.seed}", digest)
        base = reference_projection(h, cameras, frames)
        rows_g, rows_b = per_view_scores(pred, gt, alpha, dist), per_view_scores(base, gt, alpha, dist)
        for r in rows_g + rows_b:
            r["identity"] = h.seed
        gen_rows += rows_g
        base_rows += rows_b
        log(f"identity {h.seed} (reference azimuth {h.reference_azimuth:+.0f}): generated PSNR "
            f"{sum(r['psnr'] for r in rows_g) / len(rows_g):.2f} dB, baseline "
            f"{sum(r['psnr'] for r in rows_b) / len(rows_b):.2f} dB ({time.perf_counter() - t0:.0f} s)")
        if k < cfg.ablation_identities:
            steps = cfg.key_steps or PRESETS["small"].key_steps
            for kind, group in ABLATIONS:
                pred_w = generate_window(model, vae, head, h, cameras, (vs.azimuth, vs.elevation), kind, group,
                                         steps, cfg.seed)
                n = pred_w.shape[1]
                rows = per_view_scores(pred_w, gt[:, :n], alpha[:, :n], dist)
                ablation[f"{kind}_V{group}"] += rows
                write_png_grid(out / "samples" / f"{h.seed}_{kind}_V{group}.png", pred_w, gt)
        write_png_grid(out / "samples" / f"{h.seed}_plan.png", pred, gt, base)
    report["generation"] = {"per_view": gen_rows, "binned": binned(gen_rows)}
    report["baseline"] = {"per_view": base_rows, "binned": binned(base_rows)}
    report["ablation"] = {name: {**{m: _mean(rows, m) for m in METRICS}, "binned": binned(rows)}
                          for name, rows in ablation.items() if rows}
    report["seconds"] = time.perf_counter() - t0
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(report))
    log(markdown(report))
    return report


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else math.nan


def write_png_grid(path: Path, *videos: torch.Tensor) -> None:
    """Rows: each video's views at its middle frame (generated / ground truth / baseline)."""
    f = min(v.shape[1] for v in videos) // 2
    tiles = torch.cat([v[:, f] for v in videos]).permute(0, 2, 3, 1)       # (rows * V, H, W, 3)
    write_png(path, grid(tiles, cols=videos[0].shape[0], pad=1))


def markdown(report: dict) -> str:
    ae = report["autoencoder"]
    lines = [f"Autoencoder reconstruction PSNR (held-out windows, {ae['windows']} x 9 frames): "
             f"**{ae['psnr']:.2f} dB**", "",
             "| angle from reference | views | generated PSNR | baseline PSNR | generated SSIM | baseline SSIM "
             "| masked (MVP4D S3): generated PSNR | baseline PSNR | generated SSIM | baseline SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = {b["bin"]: b for b in report["baseline"]["binned"]}
    for g in report["generation"]["binned"]:
        b = base[g["bin"]]
        lines.append(f"| {g['bin']} deg | {g['views']} | {g['psnr']:.2f} | {b['psnr']:.2f} | {g['ssim']:.3f} | "
                     f"{b['ssim']:.3f} | {g['psnr_masked']:.2f} | {b['psnr_masked']:.2f} | "
                     f"{g['ssim_masked']:.3f} | {b['ssim_masked']:.3f} |")
    if report.get("ablation"):
        lines += ["", "| Table 7 ablation (one 17-frame window) | PSNR | SSIM | PSNR >= 30 deg | masked PSNR |",
                  "|---|---|---|---|---|"]
        for name, a in report["ablation"].items():
            far = [b for b in a["binned"] if float(b["bin"].split("-")[0]) >= 30]
            far_psnr = (f"{sum(b['psnr'] * b['views'] for b in far) / sum(b['views'] for b in far):.2f}"
                        if far else "-")
            lines.append(f"| {name.replace('_', ', ')} | {a['psnr']:.2f} | {a['ssim']:.3f} | {far_psnr} | "
                         f"{a['psnr_masked']:.2f} |")
    lines += ["", f"({report['seconds'] / 60:.1f} min on this machine)", ""]
    return "\n".join(lines)


__all__ = ["QualityConfig", "run_quality", "reference_projection", "binned",
           "per_view_scores", "markdown", "METRICS", "ANGLE_BINS", "ABLATIONS"]
