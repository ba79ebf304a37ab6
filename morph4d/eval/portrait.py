"""IM-Portrait on held-out synthetic identities (issue 18 §7; IM-Portrait §5): ``morph4d eval --portrait UNET``.

For each held-out identity (``data.heldout``: seeds 900000+, never trained on), the reference is its reference
render (frame 0, reference camera at ``REFERENCE_AZIMUTHS[k]``), the driving animation its own random animation,
and the MPIs' frontal camera the orbit camera at azimuth 0 (``cameras.VIEW_RADIUS`` / ``VIEW_FOV``). A long video
of ``clips`` x ``clip`` frames is sampled (``portrait.sample.sample_video``), then scored against exact renders:

* **frontal**: L1, PSNR, SSIM of every frame (the paper's frontal metrics; our frames are over white), beside the
  reference projection on the true geometry (head, hair, glasses: ``eval.synthetic.reference_projection``,
  MVP4D's baseline in ``morph4d quality``: an oracle here, a photo has no hair mesh) and the projection through
  the head mesh alone (``objective.frame_conditions``: what the network's reference-projection channels hold);
* **side views at +-``side_deg``**: the MPI rendered into the side cameras versus the paper's baseline "2D video +
  monocular depth lifting" (``portrait.lift``: the same network's frontal render lifted by the MPI's expected
  depth), both against the exact ground-truth side views, which the paper did not have (it used FID);
* **drift** (the supplement's Fig. A): frontal PSNR per clip of the scheduled first-frame guidance (1 -> 0 over
  half a clip) versus a constant scale of 1.5; drift = first clip's PSNR minus the last clip's.
Writes ``report.json`` (every number), ``report.md`` (the tables the README shows) and ``sheet_SEED.png`` per
identity (``sheet``: ground truth, MPI, baseline, side views at five frames).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, Cameras, orbit_cameras
from morph4d.conditioning.uvmaps import UVConditioner
from morph4d.data.format import select_frames
from morph4d.data.heldout import ground_truth, held_out_identity
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.errors import Morph4DError
from morph4d.eval.synthetic import reference_projection
from morph4d.heads import load_head_model
from morph4d.io import atomic_path, write_json
from morph4d.metrics import l1, psnr, ssim
from morph4d.models.portrait_unet import PortraitUNet
from morph4d.portrait.lift import lift_depth
from morph4d.portrait.mpi import head_distance, orbit_about, plane_depths, render_mpi
from morph4d.portrait.objective import frame_conditions, frame_mpi
from morph4d.portrait.sample import sample_video
from morph4d.video import grid, write_png

CONSTANT_FIRST = 1.5   # the supplement's Fig. A comparison


def _scores(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    return {"psnr": psnr(pred, gt), "ssim": float(ssim(pred[None], gt[None])), "l1": l1(pred, gt)}


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else math.nan


def run_portrait_eval(out, unet: str, identities: int = 2, clip: int = 16, clips: int = 3, steps: int = 20,
                      side_deg: float = 5.0, log=print) -> dict:
    """The benchmark (module doc) -> ``out/report.json``, ``out/report.md``; returns the report."""
    if not 1 <= identities <= 100 or clip < 2 or clips < 1 or steps < 1:
        raise Morph4DError(f"--identities must be in 1..100, --clip >= 2, --clips >= 1, --steps >= 1; got "
                           f"{identities}, {clip}, {clips}, {steps}")
    t0, out = time.perf_counter(), Path(out)
    net = PortraitUNet.from_pretrained(unet).eval()
    S = net.config.sample_size
    head = load_head_model("builtin")
    uv = UVConditioner(head)
    diffusion = Diffusion(DiffusionConfig(snr_shift_scale=1.0))
    F = clip * clips
    front = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), VIEW_RADIUS, VIEW_FOV, S, S)
    frontal_rows, side_rows, drift = [], [], {"scheduled": [], "constant": []}
    for k in range(identities):
        h = held_out_identity(head, k, F, S, VIEW_RADIUS, VIEW_FOV)
        params = select_frames(h.params, list(range(F)))
        with torch.no_grad():
            joint = head.joints(select_frames(params, [0])).reshape(-1, 3)[0]
            ref_params = select_frames(h.params, [0])
            maps, on_head = frame_conditions(uv, head(params), front, head(ref_params)[0],
                                             h.reference_camera, h.reference_image, True)   # on_head: the projection
            maps = maps if net.config.projection else maps[:, :3]                  # a network without the channels
            reference = torch.cat([h.reference_image * 2 - 1, uv.maps(ref_params, h.reference_camera)[0]])
        sides = Cameras.cat([orbit_about(front, joint, -side_deg), orbit_about(front, joint, side_deg)])
        gt, _ = ground_truth(h, Cameras.cat([front, sides]), F)                     # (3, F, 3, S, S)
        depths = plane_depths(head_distance(front, joint), net.config.planes).float()
        baseline = reference_projection(h, front, F)[0]                             # (F, 3, S, S)
        for mode, constant in (("scheduled", None), ("constant", CONSTANT_FIRST)):
            outputs = sample_video(net, diffusion, maps, reference, depths, front, clip, steps, seed=k,
                                   constant_first=constant)
            frames = [frame_mpi({key: v[None] for key, v in o.items()}, 0, f, depths, front)
                      for o in outputs for f in range(o["alpha"].shape[0])]
            with torch.no_grad():
                rendered = [render_mpi(m, front) for m in frames]
            fr = torch.stack([r.rgb[0] for r in rendered])
            if mode == "scheduled":
                sheet(out / f"sheet_{h.seed}.png", gt[0], fr, baseline, [render_mpi(m, sides).rgb for m in frames])
            drift[mode].append([psnr(fr[c * clip:(c + 1) * clip], gt[0, c * clip:(c + 1) * clip])
                                for c in range(clips)])
            if mode != "scheduled":
                continue
            for f in range(F):
                frontal_rows.append({"identity": h.seed, "frame": f, **_scores(fr[f], gt[0, f]),
                                     **{f"proj_{m}": x for m, x in _scores(baseline[f], gt[0, f]).items()},
                                     **{f"mesh_{m}": x for m, x in _scores(on_head[f], gt[0, f]).items()}})
                with torch.no_grad():
                    mpi_side = render_mpi(frames[f], sides).rgb
                    lifted = lift_depth(rendered[f].rgb[0], rendered[f].depth[0], rendered[f].alpha[0], front, sides)
                for v in range(2):
                    side_rows.append({"identity": h.seed, "frame": f, "side": ("left", "right")[v],
                                      **{f"mpi_{m}": x for m, x in _scores(mpi_side[v], gt[1 + v, f]).items()},
                                      **{f"lift_{m}": x for m, x in _scores(lifted[v], gt[1 + v, f]).items()}})
        log(f"[eval portrait] identity {h.seed}: frontal PSNR {_mean(frontal_rows[-F:], 'psnr'):.2f} dB "
            f"({time.perf_counter() - t0:.0f} s)")
    per_clip = {mode: [sum(r[c] for r in rows) / len(rows) for c in range(clips)] for mode, rows in drift.items()}
    report = {"config": {"unet": str(Path(unet).resolve()), "identities": identities, "clip": clip, "clips": clips,
                         "steps": steps, "side_deg": side_deg},
              "frontal": {m: _mean(frontal_rows, m) for m in ("l1", "psnr", "ssim")},
              "frontal_projection": {m: _mean(frontal_rows, f"proj_{m}") for m in ("l1", "psnr", "ssim")},
              "frontal_head_projection": {m: _mean(frontal_rows, f"mesh_{m}") for m in ("l1", "psnr", "ssim")},
              "side": {f"{rep}_{m}": _mean(side_rows, f"{rep}_{m}") for rep in ("mpi", "lift")
                       for m in ("l1", "psnr", "ssim")},
              "drift": {mode: {"psnr_per_clip": v, "drift_db": v[0] - v[-1]} for mode, v in per_clip.items()},
              "rows": {"frontal": frontal_rows, "side": side_rows}, "seconds": time.perf_counter() - t0}
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(report))
    log(markdown(report))
    return report


def sheet(path: Path, gt: torch.Tensor, frontal: torch.Tensor, baseline: torch.Tensor, sides: list) -> None:
    """``sheet_SEED.png``: rows ground truth / MPI frontal render / reference projection / the MPI's -side and
    +side views, at five frames spread over the video (F, 3, S, S each; ``sides`` one (2, 3, S, S) per frame)."""
    F = gt.shape[0]
    pick = sorted({round(i * (F - 1) / 4) for i in range(5)})
    rows = [gt[pick], frontal[pick], baseline[pick], torch.stack([sides[f][0] for f in pick]),
            torch.stack([sides[f][1] for f in pick])]
    write_png(path, grid(torch.cat(rows).clamp(0, 1).permute(0, 2, 3, 1), cols=len(pick), pad=1))


def markdown(r: dict) -> str:
    c, fr, sd = r["config"], r["frontal"], r["side"]
    pr, hp = r["frontal_projection"], r["frontal_head_projection"]
    lines = [f"IM-Portrait on {c['identities']} held-out identities, {c['clips']} clips x {c['clip']} frames, "
             f"{c['steps']} DDIM steps", "",
             "| frontal view | L1 ↓ | PSNR ↑ | SSIM ↑ |", "|---|---|---|---|",
             f"| MPI (frontal render) | {fr['l1']:.4f} | {fr['psnr']:.2f} | {fr['ssim']:.3f} |",
             f"| reference projection through the head mesh (what a photo gives; the small preset's input) | "
             f"{hp['l1']:.4f} | {hp['psnr']:.2f} | {hp['ssim']:.3f} |",
             f"| reference projection on the true geometry: head, hair, glasses (an oracle; MVP4D's baseline) | "
             f"{pr['l1']:.4f} | {pr['psnr']:.2f} | {pr['ssim']:.3f} |", "",
             f"| side views (±{c['side_deg']:g}°) vs exact ground truth | L1 ↓ | PSNR ↑ | SSIM ↑ |",
             "|---|---|---|---|",
             f"| MPI rendered into the side cameras | {sd['mpi_l1']:.4f} | {sd['mpi_psnr']:.2f} | "
             f"{sd['mpi_ssim']:.3f} |",
             f"| 2D video + depth lifting (baseline) | {sd['lift_l1']:.4f} | {sd['lift_psnr']:.2f} | "
             f"{sd['lift_ssim']:.3f} |", "",
             "| first-frame guidance | frontal PSNR per clip | drift (first - last clip, dB) |", "|---|---|---|"]
    for mode, d in r["drift"].items():
        label = "scheduled (1 -> 0 over half a clip)" if mode == "scheduled" else f"constant {CONSTANT_FIRST}"
        lines.append(f"| {label} | {' / '.join(f'{x:.2f}' for x in d['psnr_per_clip'])} | {d['drift_db']:.2f} |")
    lines += ["", f"({r['seconds'] / 60:.1f} min on this machine)", ""]
    return "\n".join(lines)


__all__ = ["CONSTANT_FIRST", "run_portrait_eval", "markdown"]
