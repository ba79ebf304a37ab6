"""``morph4d fit | render | export | view``: fit an avatar to multi-view videos, drive and render it, export
it (.ply, .m4da, viewer folder) and play it in the browser."""

from __future__ import annotations

import os

from morph4d.errors import Morph4DError
from morph4d.heads.cli import animation_help

FLAME_HELP = "FLAME file, for avatars fitted with FLAME"


def add_reference_share(p, flag: str) -> None:
    """The fit's share of iterations on the reference image (``FitConfig.reference_share``; ours, issue 17)."""
    from morph4d.avatar.fit import REFERENCE_SHARE
    p.add_argument(flag, type=float, default=REFERENCE_SHARE, metavar="S",
                   help=f"share of the fit's iterations spent on the reference image of a generated folder, 0 <= S "
                        f"< 1 (default {REFERENCE_SHARE}; 0: the generated views only, as MVP4D)")


def _cmd_fit(args) -> None:
    from morph4d.avatar.fit import FitConfig, evaluate, fit_sequence
    cfg = FitConfig(iterations=args.iterations, resolution=args.res, seed=args.seed,
                    reference_share=args.reference_share)
    fit_sequence(args.sequence, args.out, cfg, flame_path=args.flame_path)
    print(f"done: {args.out}/avatar.safetensors, mean PSNR over the sequence's views and frames "
          f"{evaluate(args.sequence, args.out, resolution=args.res, flame_path=args.flame_path):.2f} dB")


def _cmd_render(args) -> None:
    from morph4d.avatar.render import render_video
    out = render_video(args.avatar, args.out, args.animation, args.frames, args.res, args.orbit, args.flame_path)
    print(f"wrote {out}")


def _cmd_export(args) -> None:
    from morph4d.avatar.viewer import export
    out = export(args.avatar, args.out, args.format, args.animation, args.frames, args.frame, args.fps,
                 args.flame_path)
    print(f"wrote {out}")


def _cmd_view(args) -> None:
    from morph4d.avatar.viewer import cache_folder, export, serve
    if not os.path.isdir(args.avatar):
        raise Morph4DError(f"no avatar folder {args.avatar}; run `morph4d fit` first")
    folder = cache_folder(args.avatar, args.animation)
    export(args.avatar, folder, "html", args.animation, args.frames, fps=args.fps, flame_path=args.flame_path)
    serve(folder, args.port, open_browser=not args.no_browser)


def _add_drive_args(p, fps: bool = True) -> None:
    p.add_argument("avatar", help="avatar folder written by `morph4d fit`")
    p.add_argument("--animation", default="talk", help=animation_help(fitted=True))
    p.add_argument("--frames", type=int, default=49, help="frames of a built-in animation (default 49)")
    if fps:
        p.add_argument("--fps", type=float, default=25.0, help="fps of a built-in animation (default 25)")
    p.add_argument("--flame-path", default=None, help=FLAME_HELP)


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit Gaussians bound to the head mesh to multi-view videos (resumable)")
    p.add_argument("sequence", help="a dataset sequence folder (docs/DATA.md) or a `morph4d generate` output folder")
    p.add_argument("--out", required=True, help="avatar folder; a stopped fit resumes there")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--res", type=int, default=None, help="fit at this square resolution (default: the images')")
    p.add_argument("--seed", type=int, default=0)
    add_reference_share(p, "--reference-share")
    p.add_argument("--flame-path", default=None, help="FLAME file, for sequences tracked with FLAME")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("render", help="a fitted avatar driven by an animation (any, also new ones) -> MP4")
    _add_drive_args(p, fps=False)
    p.add_argument("--out", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--res", type=int, default=256, help="square video size in pixels (default 256)")
    p.add_argument("--orbit", action="store_true", help="camera sweeps +-60 degrees around the head")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("export", help="a fitted avatar -> one frame as a 3DGS .ply, an animated .m4da file "
                       "(docs/AVATAR_FORMAT.md) or a standalone viewer folder")
    _add_drive_args(p)
    p.add_argument("--out", required=True, help="ply: a .ply file; animated: a .m4da file or a folder (gets "
                   "avatar.m4da); html: a folder (index.html + avatar.m4da, serve it over http)")
    p.add_argument("--format", default="ply", choices=["ply", "animated", "html"])
    p.add_argument("--frame", type=int, default=0, help="the frame to write (ply; default 0)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("view", help="play a fitted avatar in the browser (WebGL2 viewer served on localhost)")
    _add_drive_args(p)
    p.add_argument("--port", type=int, default=8000, help="localhost port (default 8000; 0: any free port)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(func=_cmd_view)


__all__ = ["register"]
