"""4D avatar fit quality on a held-out synthetic person: PSNR at views the fit never saw (MVP4D §6 evaluates
novel views the same way), fitting wall time, and the time of one forward + backward iteration.

Data: one identity of the held-out split (``--split eval``, seed 900000, never used for training anything),
``--views`` cameras of the synthetic multi-view rig (default 20) at 128 x 128, ``--frames`` frames (default
3, to stay within minutes on 2 cores). Every 5th view (1, 6, 11, 16) is held out; the other 16 are fitted
with the default ``FitConfig`` (U-Net deformation, back-face culling/dropout, densification, off-mesh
Gaussians). Reported: PSNR on the held-out views over all frames (target >= 28 dB), PSNR on the training
views, fitting wall time, mean fwd + bwd time of one iteration of the fitted avatar (render one 128 px
view, loss, backward), the Gaussian count. Writes ``docs/fit_heldout.png`` (rows: ground truth, render;
columns: held-out views at frame 0) and ``out/bench_fit/results.json``.

``--demo`` measures the demo-sized fit instead: ``FIT_PRESETS["demo"]`` on 8 views x 25 frames at 64 px
(the size of ``morph4d generate``'s output that ``morph4d avatar`` fits), all views fitted, no PNG; the
target is <= 5 minutes.

Both print the loop's wall and CPU milliseconds per iteration by phase (``fit.PhaseClock``) and the ratio of
an iteration to the rasterizer's own forward + backward on the fitted Gaussians (the floor of this design).

    python benchmarks/bench_fit.py [--iterations 2000] [--threads N]
    python benchmarks/bench_fit.py --demo
"""

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from morph4d.avatar.fit import FIT_PRESETS, PhaseClock, evaluate, fit_sequence, load_fit_data
from morph4d.avatar.gaussians import render_gaussians
from morph4d.avatar.gaussians.losses import total_loss
from morph4d.avatar.model import load_avatar
from morph4d.data.identity import EVAL_SEEDS
from morph4d.data.synth import SynthConfig, synthesize
from morph4d.io import write_json
from morph4d.threads import DEFAULT_THREADS, configure_threads
from morph4d.video import grid, write_png

TARGET_PSNR = 28.0
TARGET_DEMO_SECONDS = 300.0


def rasterizer_floor(seq: Path, avatar_dir: Path, view: int, repeats: int = 7) -> float:
    """Median seconds of the Gaussian rasterizer alone, forward + backward, on the fitted avatar's Gaussians
    (frame 0, one training view, the fit's resolution): the floor of a fit iteration in this design."""
    data, avatar = load_fit_data(seq), load_avatar(avatar_dir)
    with torch.no_grad():
        w = avatar.world(avatar.vertices(data.params)[0], 0)
    leaves = [t.detach().clone().requires_grad_(True) for t in (w.means, w.quats, w.scales, w.opacities, w.sh)]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        render_gaussians(*leaves, data.cameras[[view]]).image.sum().backward()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def print_phases(phases: dict, iteration: float, floor: float) -> None:
    print(f"{'phase':10} {'wall ms/it':>11} {'cpu ms/it':>10} {'share':>6}")
    for name, p in phases.items():
        print(f"{name:10} {p['wall_ms']:11.2f} {p['cpu_ms']:10.2f} {100 * p['share']:5.1f}%")
    print(f"iteration {1000 * iteration:.1f} ms wall; rasterizer alone (fwd + bwd) {1000 * floor:.1f} ms: "
          f"{iteration / floor:.2f}x the floor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--views", type=int, default=None, help="default 20 (--demo: 8)")
    ap.add_argument("--frames", type=int, default=None, help="default 3 (--demo: 25)")
    ap.add_argument("--res", type=int, default=None, help="default 128 (--demo: 64)")
    ap.add_argument("--demo", action="store_true", help="FIT_PRESETS['demo'] on 8 views x 25 frames at 64 px")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                    help="torch, numba and OpenMP threads (default: as the commands, morph4d/threads.py)")
    ap.add_argument("--sequence", default=None, help="fit this dataset sequence or generate output instead of "
                    "synthesizing one (e.g. out/demo/avatar/generated: the demo's own fit)")
    ap.add_argument("--held-out", default=None, help="comma-separated views never fitted, scored after the fit "
                    "(default 1,6,11,16; --demo: none)")
    ap.add_argument("--out", default="out/bench_fit")
    ap.add_argument("--png", default="docs/fit_heldout.png")
    args = ap.parse_args()
    views, frames, res = (8, 25, 64) if args.demo else (20, 3, 128)
    args.views, args.frames, args.res = args.views or views, args.frames or frames, args.res or res
    if args.demo and args.out == "out/bench_fit":
        args.out = "out/bench_fit_demo"
    configure_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out / "avatar", ignore_errors=True)
    if args.sequence:
        seq = Path(args.sequence)
        args.views = load_fit_data(seq).num_views
    else:
        shutil.rmtree(out / "data", ignore_errors=True)  # synthesize skips existing sequences: start clean
        names = synthesize(SynthConfig(out=str(out / "data"), identities=1, views=args.views, frames=args.frames,
                                       resolution=args.res, split="eval", first_seed=EVAL_SEEDS.start,
                                       progress=False), log=lambda *_: None)
        seq = out / "data" / names[0]
    if args.held_out is not None:
        held_out = [int(v) for v in args.held_out.split(",") if v.strip()]
    else:
        held_out = [] if args.demo else [v for v in range(args.views) if v % 5 == 1]
    train = tuple(v for v in range(args.views) if v not in held_out)
    preset = FIT_PRESETS["demo" if args.demo else "default"]
    cfg = replace(preset, iterations=args.iterations or preset.iterations, train_views=train, log_every=100,
                  checkpoint_every=10 ** 9)
    clock = PhaseClock()
    start, start_cpu = time.perf_counter(), time.process_time()
    fit_sequence(seq, out / "avatar", cfg, clock=clock)
    # CPU seconds of this process (all its threads)
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    psnr_train = evaluate(seq, out / "avatar", views=list(train))
    floor = rasterizer_floor(seq, out / "avatar", train[0])
    loop_wall = sum(clock.wall.values()) / clock.iterations
    phases = {name: {"wall_ms": round(1000 * clock.wall[name] / clock.iterations, 2),
                     "cpu_ms": round(1000 * clock.cpu[name] / clock.iterations, 2),
                     "share": round(clock.wall[name] / sum(clock.wall.values()), 3)} for name in PhaseClock.PHASES}
    common = {"fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1),
              "iteration_wall_s": round(loop_wall, 4),
              "iteration_cpu_s": round(sum(clock.cpu.values()) / clock.iterations, 4),
              "setup_seconds": round(fit_s - sum(clock.wall.values()), 1), "phases": phases,
              "rasterizer_fwd_bwd_s": round(floor, 4), "iteration_over_rasterizer": round(loop_wall / floor, 2),
              "psnr_train_db": round(psnr_train, 2), "iterations": cfg.iterations,
              "gaussians": len(load_avatar(out / "avatar").gaussians), "threads": torch.get_num_threads(),
              "load_average": os.getloadavg()}
    print_phases(phases, loop_wall, floor)
    if args.demo:
        results = {"preset": "demo", "target_seconds": TARGET_DEMO_SECONDS, **common, "views": args.views,
                   "frames": args.frames, "resolution": args.res, "held_out_views": held_out,
                   "sequence": str(seq)}
        if held_out:
            results["psnr_heldout_db"] = round(evaluate(seq, out / "avatar", views=held_out), 2)
        write_json(out / "results.json", results)
        print(json.dumps(results, indent=2))
        return
    psnr_held = evaluate(seq, out / "avatar", views=held_out)

    # fwd + bwd of one iteration of the fitted avatar (no deformation: the renderer + loss part)
    data, avatar = load_fit_data(seq), load_avatar(out / "avatar")
    verts = avatar.vertices(data.params)
    g = avatar.gaussians
    for name in ("local_means", "log_scales", "quats", "opacity_logits", "sh"):
        getattr(g, name).requires_grad_(True)
    times = []
    for i in range(6):
        t = time.perf_counter()
        w = g.to_world(verts[0], avatar.head.faces)
        r = render_gaussians(w.means, w.quats, w.scales, w.opacities, w.sh, data.cameras[[train[i % len(train)]]])
        loss, _ = total_loss(r.image.permute(0, 3, 1, 2), data.images[train[i % len(train)], 0][None],
                             local_means=g.local_means, log_scales=g.log_scales)
        loss.backward()
        times.append(time.perf_counter() - t)
    fwd_bwd = sorted(times[1:])[len(times[1:]) // 2]

    with torch.no_grad():
        w = avatar.world(verts[0], 0)
        renders = render_gaussians(w.means, w.quats, w.scales, w.opacities, w.sh, data.cameras[held_out]).image
    gt = data.images[held_out, 0].permute(0, 2, 3, 1)
    write_png(args.png, grid(torch.cat([gt, renders.clamp(0, 1)]), cols=len(held_out)))
    results = {"psnr_heldout_db": round(psnr_held, 2), "target_psnr_db": TARGET_PSNR, **common,
               "fwd_bwd_seconds": round(fwd_bwd, 3),
               "held_out_views": held_out, "train_views": list(train), "frames": args.frames, "resolution": args.res}
    write_json(out / "results.json", results)
    print(json.dumps(results, indent=2))
    print(f"held-out PSNR {psnr_held:.2f} dB ({'meets' if psnr_held >= TARGET_PSNR else 'below'} the "
          f"{TARGET_PSNR} dB target); wrote {args.png}")


if __name__ == "__main__":
    main()
