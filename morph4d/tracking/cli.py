"""``morph4d track``: a portrait photo or a driving video -> tracked reference / animation + overlays."""

from __future__ import annotations

from morph4d.heads.cli import add_head_args


def _cmd_track(args) -> None:
    from morph4d.tracking.run import TrackConfig, run_track
    paths = run_track(TrackConfig(input=args.input, out=args.out, res=args.res, head=args.head,
                                  flame_path=args.flame_path, embedding=args.embedding, max_frames=args.max_frames))
    print("done: " + ", ".join(f"{k} {v}" for k, v in paths.items()))


def add_tracking_args(p) -> None:
    """Arguments every command that tracks a user's photo or video shares."""
    p.add_argument("--embedding", default=None,
                   help="landmark embedding .npz of the head model (FLAME: the MediaPipe-to-FLAME embedding, "
                        "lmk_face_idx / lmk_b_coords / landmark_indices); the built-in head ships its own")


def register(sub) -> None:
    p = sub.add_parser("track", help="track a portrait photo (-> reference.npz) or a driving video (-> animation.npz), "
                       "with overlays to judge the fit")
    p.add_argument("input", help="a photo (JPEG, PNG, WebP, TIFF, ...) or a video (MP4, MOV, MKV, WebM, AVI)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--res", type=int, default=512,
                   help="side of the reference crop in pixels (default 512; the embedded default generates at 64)")
    p.add_argument("--max-frames", type=int, default=None, help="video: track at most this many frames")
    add_head_args(p)
    add_tracking_args(p)
    p.set_defaults(func=_cmd_track)


__all__ = ["register", "add_tracking_args"]
