"""Tracking accuracy and speed (issue 16 §5-6): ``python benchmarks/bench_tracking.py [--identities N]``.

Accuracy: held-out synthetic identities (morph4d/tracking/accuracy.py: exact ground truth) at yaws 0/15/30/45/60
degrees and vertical fields of view 14/26/45 degrees (long lens .. phone), one random expression, jaw, gaze and a
+-10 degree pitch each; the photo tracker on a 512 px render. Table rows per yaw: detection rate, 2D landmark error
(px and NME), head-pose error (deg), the detector's bound (the pose error of a PnP of the detected landmarks on the
true mesh), 3D face-vertex error after similarity alignment (mm), expression error (mm), focal error. Then a
tracked synthetic clip (pose error per frame, with and without the zero-lag smoothing).

Speed: one photo (the real portrait shipped in assets/portraits), wall time vs the face networks' own time; a video
at 512 px, frames per second vs the networks' own frames per second. Ratios, one run, this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from morph4d.heads import load_head_model  # noqa: E402
from morph4d.threads import DEFAULT_THREADS, configure_threads  # noqa: E402
from morph4d.tracking.accuracy import clip_pose_errors, evaluate_case, synthetic_clip  # noqa: E402
from morph4d.tracking.detect import FaceModels  # noqa: E402
from morph4d.tracking.embedding import default_embedding  # noqa: E402
from morph4d.tracking.fit import FitConfig, LandmarkHead  # noqa: E402
from morph4d.tracking.observe import observe_frame, observe_image  # noqa: E402
from morph4d.tracking.portrait import read_photo, track_photo  # noqa: E402
from morph4d.tracking.video import track_video  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "morph4d" / "assets" / "portraits" / "eileen_collins.jpg"
YAWS = (0, 15, 30, 45, 60)
FOVS = (14, 26, 45)


def accuracy(head, emb, fm, identities: int) -> None:
    lh = LandmarkHead(head, emb)
    rows = {y: [] for y in YAWS}
    tried = {y: 0 for y in YAWS}
    for k in range(identities):
        for yaw in YAWS:
            for i, fov in enumerate(FOVS):
                if (k + i) % 3:           # each identity at one field of view per yaw, cycling
                    continue
                tried[yaw] += 1
                r = evaluate_case(head, emb, fm, k, yaw, fov, head=lh)
                if r is not None:
                    rows[yaw].append(r)
    print("| yaw (deg) | faces found | 2D landmarks (px @512 / NME) | head pose (deg) | detector bound (deg) | "
          "3D face vertices (mm) | expression (mm) | focal error |")
    print("|---|---|---|---|---|---|---|---|")
    allr = []
    for yaw in YAWS:
        rr = rows[yaw]
        allr += [r for r in rr if yaw <= 45]
        if not rr:
            print(f"| {yaw} | 0/{tried[yaw]} | - | - | - | - | - | - |")
            continue
        m = lambda f: np.mean([getattr(r, f) for r in rr])  # noqa: E731
        print(f"| {yaw} | {len(rr)}/{tried[yaw]} | {m('landmark_px'):.1f} / {m('landmark_nme') * 100:.1f}% | "
              f"{m('pose_deg'):.2f} (max {max(r.pose_deg for r in rr):.1f}) | {m('pnp_deg'):.2f} | "
              f"{m('vertex_mm'):.2f} | "
              f"{m('expression_mm'):.2f} | {m('focal_rel') * 100:.0f}% |")
    m = lambda f: np.mean([getattr(r, f) for r in allr])  # noqa: E731
    print(f"| **<= 45** | {len(allr)} | {m('landmark_px'):.1f} / {m('landmark_nme') * 100:.1f}% | "
          f"**{m('pose_deg'):.2f}** | {m('pnp_deg'):.2f} "
          f"| **{m('vertex_mm'):.2f}** | {m('expression_mm'):.2f} | {m('focal_rel') * 100:.0f}% |")


def clip(head, emb, fm, frames: int) -> None:
    images, truth, cam = synthetic_clip(head, 3, frames, 512)
    t = time.perf_counter()
    for tw, name in ((0.0, "per-frame fits"), (FitConfig().time_weight, "zero-lag smoothing (default)")):
        t = time.perf_counter()
        tv = track_video(list(images), 25.0, head, emb, fm, FitConfig(time_weight=tw), log=lambda *_: None)
        dt = time.perf_counter() - t
        e = clip_pose_errors(head, truth, cam, tv.track.params)
        r = tv.track.params.rotation
        acc = float((r[2:] - 2 * r[1:-1] + r[:-2]).norm(dim=-1).mean()) * 180 / np.pi
        print(f"clip ({frames} frames, 512 px), {name}: pose error {e.mean():.2f} deg (max {e.max():.2f}), "
              f"rotation acceleration {acc:.3f} deg/frame^2, {frames / dt:.1f} frames/s")
    tr = truth.rotation + truth.neck
    truth_acc = float((tr[2:] - 2 * tr[1:-1] + tr[:-2]).norm(dim=-1).mean()) * 180 / np.pi
    print(f"  ground truth rotation acceleration {truth_acc:.3f}")
    # the networks alone on the same frames
    t = time.perf_counter()
    prev = None
    for im in images:
        prev = observe_frame(fm, im, prev)
    net = frames / (time.perf_counter() - t)
    print(f"video speed: tracking {frames / dt:.1f} frames/s vs the face networks alone {net:.1f} frames/s "
          f"(ratio {frames / dt / net:.2f})")


def photo_speed(head, emb, fm) -> None:
    image, _ = read_photo(PHOTO)
    track_photo(image, head, emb, 64, fm)                      # warm-up (loads the networks)
    t = time.perf_counter()
    track_photo(image, head, emb, 64, fm)
    total = time.perf_counter() - t
    t = time.perf_counter()
    observe_image(fm, image, "photo")
    net = time.perf_counter() - t
    print(f"photo speed: tracking {total:.2f} s (target <= 5 s) vs the face networks alone {net * 1000:.0f} ms "
          f"(ratio {total / net:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=9)
    ap.add_argument("--clip-frames", type=int, default=100)
    a = ap.parse_args()
    configure_threads(DEFAULT_THREADS)
    head = load_head_model()
    emb = default_embedding(head)
    fm = FaceModels()
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    photo_speed(head, emb, fm)
    accuracy(head, emb, fm, a.identities)
    clip(head, emb, fm, a.clip_frames)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
