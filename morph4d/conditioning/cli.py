"""``morph4d conditioning``: PNG grids of every MVP4D conditioning channel (like MVP4D Fig. S9)."""

from __future__ import annotations

from morph4d.cameras import VIEW_SETS
from morph4d.cliargs import deprecated_alias
from morph4d.heads.cli import add_head_args, animation_help


def _cmd_conditioning(args) -> None:
    from morph4d.conditioning.viz import VizConfig, run_viz
    run_viz(VizConfig(out=args.out, animation=args.animation, views=args.view_set, frames=args.frames,
                      resolution=args.res, head=args.head, flame_path=args.flame_path,
                      reference_projection=args.reference_projection, model=args.model))


def register(sub) -> None:
    p = sub.add_parser("conditioning", help="write PNG grids of every MVP4D conditioning channel (like Fig. S9)")
    p.add_argument("--animation", default="talk", help=animation_help())
    p.add_argument("--view-set", default="120", choices=VIEW_SETS, help="MVP4D view set (default 120)")
    deprecated_alias(p, "--views", "--view-set", "view_set", choices=VIEW_SETS)
    p.add_argument("--frames", type=int, default=49, help="frames, 1 + 4k (default 49)")
    p.add_argument("--res", type=int, default=512, help="image resolution; latents are res/8 (default 512)")
    p.add_argument("--out", default="out/conditioning", help="output folder (default out/conditioning)")
    p.add_argument("--reference-projection", action="store_true",
                   help="also the reference-projection channels (ours, issue 17): the reference through the head "
                        "mesh, encoded by the autoencoder of --model, and its confidence")
    p.add_argument("--model", default=None, help="model folder whose autoencoder encodes the projection "
                                                 "(default: the embedded default)")
    add_head_args(p)
    p.set_defaults(func=_cmd_conditioning)


__all__ = ["register"]
