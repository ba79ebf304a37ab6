"""Cost of each `morph4d eval` metric per frame at 256 and 512 px (issue 19, "Speed"), and with ``--synthetic``
the wall time of the synthetic benchmark command: ``python benchmarks/bench_eval.py [--synthetic]
[--lpips F] [--inception F] [--i3d F]``.

Input: held-out identity 900000's ground truth (4 views of ``view_set("small")`` x 9 frames, rendered at the
size: the protocol crop of these views is ~90% of the frame) against a degraded copy (2x box-downsampled and
upsampled: a blurry prediction, so that no metric takes a shortcut on equal images). Each metric runs as
``eval.run.score_run`` calls it (the same modules, on whole frames), timed after one warm-up; the table gives
milliseconds per frame and the ratio to PSNR's cost in the same run. RE's unit is one multi-view frame (all 4
views); CSIM, AKD and AED score every 3rd frame, so their per-frame cost is per video frame; their ground-truth
side (faces and embeddings; the identity fit) is computed once per view and shared by every run, so it is
timed apart. Metrics whose package or network is missing are listed as not run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, view_set  # noqa: E402
from morph4d.data.format import select_frames  # noqa: E402
from morph4d.data.heldout import ground_truth, held_out_identity  # noqa: E402
from morph4d.eval.protocol import masked  # noqa: E402
from morph4d.heads import load_head_model  # noqa: E402
from morph4d.metrics import l1, psnr, ssim  # noqa: E402
from morph4d.threads import DEFAULT_THREADS, configure_threads  # noqa: E402

SIZES = (256, 512)
VIEWS, FRAMES = 4, 9


def data(head, size: int):
    """(V, F, 3, s, s) truth, its alpha and a blurry prediction; the views of the benchmark (their protocol crop
    is ~90% of the frame)."""
    h = held_out_identity(head, 0, FRAMES, size, VIEW_RADIUS, VIEW_FOV)
    cams = view_set("small").cameras(VIEW_RADIUS, VIEW_FOV, size, size)[list(range(VIEWS))]
    truth, alpha = ground_truth(h, cams, FRAMES)
    pred = F.interpolate(F.avg_pool2d(truth.flatten(0, 1), 2), scale_factor=2, mode="bilinear",
                         align_corners=False).unflatten(0, truth.shape[:2])
    return h, cams, truth, alpha, pred


def timed(fn, frames: int) -> float:
    fn()                                                       # warm-up: loads, first-call allocations
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / frames * 1000


def costs(head, size: int, args) -> dict:
    h, cams, truth, alpha, pred = data(head, size)
    pm, tm = masked(pred, alpha), masked(truth, alpha)
    n = VIEWS * FRAMES
    out = {}

    def per_frame(metric):
        return lambda: [metric(pm[v, f], tm[v, f]) for v in range(VIEWS) for f in range(FRAMES)]
    out["psnr"] = timed(per_frame(psnr), n)
    out["ssim"] = timed(per_frame(lambda a, b: float(ssim(a[None], b[None]))), n)
    out["l1"] = timed(per_frame(l1), n)
    try:
        from morph4d.eval.jod import JOD
        jod = JOD()
        out["jod"] = timed(lambda: [jod(pm[v], tm[v], 25.0) for v in range(VIEWS)], n)
    except ImportError:
        out["jod"] = "not run: pip install -e '.[eval]'"
    try:
        from morph4d.eval.identity import CSIM
        csim = CSIM()
        out["csim: ground truth (once per view)"] = timed(lambda: [csim.faces(truth[v]) for v in range(VIEWS)], n)
        faces = [csim.faces(truth[v]) for v in range(VIEWS)]
        out["csim: per run"] = timed(lambda: [csim.similarity(pred[v], faces[v]) for v in range(VIEWS)], n)
    except (ImportError, ValueError):
        out["csim"] = "not run: pip install -e '.[eval]'"
    from morph4d.eval.keypoints import SIDE, ExpressionTracker, akd_aed
    from morph4d.tracking.embedding import default_embedding
    tracker = ExpressionTracker(head, default_embedding(head))
    focal = float(cams.K[0, 0, 0]) * SIDE / size                 # as eval.run.crop_focal (the crop = the frame)
    out["akd + aed: ground truth (once per view)"] = timed(
        lambda: [tracker.track(truth[v], 25.0, focal) for v in range(VIEWS)], n)
    tracks = [tracker.track(truth[v], 25.0, focal) for v in range(VIEWS)]
    out["akd + aed: per run"] = timed(lambda: [akd_aed(tracker.track(pred[v], 25.0, focal, tracks[v].shape),
                                                       tracks[v]) for v in range(VIEWS)], n)
    from morph4d.eval.reprojection import reprojection_error
    with torch.no_grad():
        centre = head.joints(select_frames(h.params, [0])).reshape(-1, 3)[0]   # as eval.inputs.read_truth
    out["re (per multi-view frame)"] = timed(lambda: reprojection_error(pred, cams, centre), FRAMES)
    from morph4d.eval import learned
    for name, path, make in (("lpips", args.lpips, learned.LPIPS), ("fid features", args.inception,
                                                                     learned.InceptionFeatures),
                             ("fvd features", args.i3d, learned.I3DFeatures)):
        if path is None:
            out[name] = f"not run: pass --{ {'lpips': 'lpips', 'fid features': 'inception'}.get(name, 'i3d')} FILE"
            continue
        net = make(path)
        if name == "lpips":
            out[name] = timed(lambda: net(pm.flatten(0, 1), tm.flatten(0, 1)), n)
        elif name == "fid features":
            out[name] = timed(lambda: net.features(pm.flatten(0, 1)), n)
        else:
            out[name] = timed(lambda: net.features(pm, batch=1), n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="also time `morph4d eval --synthetic --identities 2`")
    ap.add_argument("--lpips", default=None)
    ap.add_argument("--inception", default=None)
    ap.add_argument("--i3d", default=None)
    args = ap.parse_args()
    configure_threads(DEFAULT_THREADS)
    head = load_head_model("builtin")
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    table = {s: costs(head, s, args) for s in SIZES}
    print(f"load average {os.getloadavg()[0]:.2f}\n")
    print("| metric | ms / frame @256 | x PSNR | ms / frame @512 | x PSNR | 512 / 256 |")
    print("|---|---|---|---|---|---|")
    for m in table[SIZES[0]]:
        a, b = table[256][m], table[512][m]
        if isinstance(a, str):
            print(f"| {m} | {a} | | | | |")
            continue
        print(f"| {m} | {a:.2f} | {a / table[256]['psnr']:.1f} | {b:.2f} | {b / table[512]['psnr']:.1f} | "
              f"{b / a:.2f} |")
    if args.synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "morph4d.cli", "eval", "--synthetic", "--identities", "2",
                            "--out", tmp], check=True, stdout=subprocess.DEVNULL)
            print(f"\n`morph4d eval --synthetic --identities 2`: {(time.perf_counter() - t) / 60:.1f} min "
                  f"(target <= 10), load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
