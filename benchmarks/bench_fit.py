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

    python benchmarks/bench_fit.py [--iterations 2000] [--threads 1]
    python benchmarks/bench_fit.py --demo --threads 1
"""

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_gaussians.py: shared machines

import numba  # noqa: E402
import torch  # noqa: E402

from morph4d.avatar.fit import FIT_PRESETS, evaluate, fit_sequence, load_fit_data  # noqa: E402
from morph4d.avatar.gaussians import render_gaussians  # noqa: E402
from morph4d.avatar.gaussians.losses import total_loss  # noqa: E402
from morph4d.avatar.model import load_avatar  # noqa: E402
from morph4d.data.identity import EVAL_SEEDS  # noqa: E402
from morph4d.data.synth import SynthConfig, synthesize  # noqa: E402
from morph4d.io import write_json  # noqa: E402
from morph4d.video import grid, write_png  # noqa: E402

TARGET_PSNR = 28.0
TARGET_DEMO_SECONDS = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--views", type=int, default=None, help="default 20 (--demo: 8)")
    ap.add_argument("--frames", type=int, default=None, help="default 3 (--demo: 25)")
    ap.add_argument("--res", type=int, default=None, help="default 128 (--demo: 64)")
    ap.add_argument("--demo", action="store_true", help="FIT_PRESETS['demo'] on 8 views x 25 frames at 64 px")
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads (1 is steadiest on a shared machine)")
    ap.add_argument("--out", default="out/bench_fit")
    ap.add_argument("--png", default="docs/fit_heldout.png")
    args = ap.parse_args()
    views, frames, res = (8, 25, 64) if args.demo else (20, 3, 128)
    args.views, args.frames, args.res = args.views or views, args.frames or frames, args.res or res
    if args.demo and args.out == "out/bench_fit":
        args.out = "out/bench_fit_demo"
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out / "avatar", ignore_errors=True)
    shutil.rmtree(out / "data", ignore_errors=True)  # synthesize skips existing sequences: start clean
    names = synthesize(SynthConfig(out=str(out / "data"), identities=1, views=args.views, frames=args.frames,
                                   resolution=args.res, split="eval", first_seed=EVAL_SEEDS.start, progress=False),
                       log=lambda *_: None)
    seq = out / "data" / names[0]
    held_out = [] if args.demo else [v for v in range(args.views) if v % 5 == 1]
    train = tuple(v for v in range(args.views) if v not in held_out)
    preset = FIT_PRESETS["demo" if args.demo else "default"]
    cfg = replace(preset, iterations=args.iterations or preset.iterations, train_views=train, log_every=100,
                  checkpoint_every=10 ** 9)
    start, start_cpu = time.perf_counter(), time.process_time()
    fit_sequence(seq, out / "avatar", cfg)
    # CPU seconds of this process: with --threads 1 the wall time on a core no other job shares
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    psnr_train = evaluate(seq, out / "avatar", views=list(train))
    if args.demo:
        results = {"preset": "demo", "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1),
                   "target_seconds": TARGET_DEMO_SECONDS,
                   "psnr_train_db": round(psnr_train, 2), "iterations": cfg.iterations, "views": args.views,
                   "frames": args.frames, "resolution": args.res, "gaussians": len(load_avatar(out / "avatar").gaussians),
                   "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
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
    results = {"psnr_heldout_db": round(psnr_held, 2), "psnr_train_db": round(psnr_train, 2),
               "target_psnr_db": TARGET_PSNR, "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1),
               "iterations": cfg.iterations,
               "fwd_bwd_seconds": round(fwd_bwd, 3), "gaussians": len(avatar.gaussians),
               "held_out_views": held_out, "train_views": list(train), "frames": args.frames, "resolution": args.res,
               "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
    write_json(out / "results.json", results)
    print(json.dumps(results, indent=2))
    print(f"held-out PSNR {psnr_held:.2f} dB ({'meets' if psnr_held >= TARGET_PSNR else 'below'} the "
          f"{TARGET_PSNR} dB target); wrote {args.png}")


if __name__ == "__main__":
    main()
