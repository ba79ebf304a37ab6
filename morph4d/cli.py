"""The ``morph4d`` command line. ``--help`` lists only commands that work.

Bad input (a missing file, a wrong value) prints ``error: ...`` and exits with status 2; an operating-system
failure (unwritable output folder) exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args) -> None:
    from morph4d.demo import DemoConfig, run_demo
    cfg = DemoConfig(out=args.out, head=args.head, flame_path=args.flame_path, animation=args.animation,
                     frames=args.frames, resolution=args.resolution)
    paths = run_demo(cfg)
    print(f"done: video {paths['video']}, contact sheet {paths['contact_sheet']}")


def _cmd_conditioning(args) -> None:
    from morph4d.conditioning_viz import VizConfig, run_viz
    run_viz(VizConfig(out=args.out, animation=args.animation, views=args.views, frames=args.frames,
                      resolution=args.res, head=args.head, flame_path=args.flame_path))


def _cmd_head_info(args) -> None:
    from morph4d.heads import load_head_model
    model = load_head_model(args.head, flame_path=args.flame_path)
    print(model.describe())
    print("shape components:", ", ".join(model.shape_names))
    print("expression components:", ", ".join(model.expression_names))


def _cmd_flame_convert(args) -> None:
    from morph4d.heads.flame import convert_flame
    if not args.out.endswith(".npz"):
        raise ValueError(f"the output must be an .npz file, got '{args.out}'")
    out = convert_flame(args.pkl, args.out)
    print(f"wrote {out}")


def _cmd_animation_export(args) -> None:
    from morph4d.heads import load_head_model
    from morph4d.heads.animation import builtin_animation
    if not args.out.endswith(".npz"):
        raise ValueError(f"the output must be an .npz file, got '{args.out}'")
    model = load_head_model(args.head, flame_path=args.flame_path)
    builtin_animation(args.name, model, args.frames, args.fps).save(args.out)
    print(f"wrote {args.out}")


def _add_head_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--head", default="builtin", choices=["builtin", "flame"],
                   help="head model: the shipped built-in head (default) or FLAME (needs --flame-path)")
    p.add_argument("--flame-path", default=None,
                   help="FLAME 2020 generic_model.pkl, FLAME 2023 flame2023.pkl, or a converted .npz")


def build_parser() -> argparse.ArgumentParser:
    from morph4d.heads.animation import BUILTIN_ANIMATIONS
    parser = argparse.ArgumentParser(prog="morph4d", description="One portrait photo -> animatable 4D head "
                                     "avatar (MVP4D, IM-Portrait). Foundation: head models, cameras, rendering.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="render the head model, animated, from an orbit of cameras (MP4 + PNG)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--animation", default="talk",
                   help=f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)}) or an animation .npz")
    p.add_argument("--frames", type=int, default=49, help="frames for a built-in animation (default 49)")
    p.add_argument("--resolution", type=int, default=256, help="video resolution in pixels (default 256)")
    _add_head_args(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("conditioning", help="write PNG grids of every MVP4D conditioning channel (like Fig. S9)")
    p.add_argument("--animation", default="talk",
                   help=f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)}) or an animation .npz")
    p.add_argument("--views", default="120", choices=["120", "360"], help="MVP4D view set (default 120)")
    p.add_argument("--frames", type=int, default=49, help="frames, 1 + 4k (default 49)")
    p.add_argument("--res", type=int, default=512, help="image resolution; latents are res/8 (default 512)")
    p.add_argument("--out", default="out/conditioning", help="output folder (default out/conditioning)")
    _add_head_args(p)
    p.set_defaults(func=_cmd_conditioning)

    p = sub.add_parser("head", help="head model tools")
    hs = p.add_subparsers(dest="head_command", required=True, metavar="SUBCOMMAND")
    q = hs.add_parser("info", help="print the head model's sizes and component names")
    _add_head_args(q)
    q.set_defaults(func=_cmd_head_info)

    p = sub.add_parser("flame", help="FLAME tools")
    fs = p.add_subparsers(dest="flame_command", required=True, metavar="SUBCOMMAND")
    q = fs.add_parser("convert", help="convert an official FLAME .pkl to a plain .npz (no pickle, no chumpy)")
    q.add_argument("pkl", help="FLAME 2020 generic_model.pkl or FLAME 2023 flame2023.pkl")
    q.add_argument("out", help="output .npz")
    q.set_defaults(func=_cmd_flame_convert)

    p = sub.add_parser("animation", help="animation tools")
    an = p.add_subparsers(dest="animation_command", required=True, metavar="SUBCOMMAND")
    q = an.add_parser("export", help="write a built-in animation as an animation .npz file")
    q.add_argument("name", choices=BUILTIN_ANIMATIONS)
    q.add_argument("out", help="output .npz")
    q.add_argument("--frames", type=int, default=49)
    q.add_argument("--fps", type=float, default=25.0)
    _add_head_args(q)
    q.set_defaults(func=_cmd_animation_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: usage error
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine refused (unwritable folder, full disk): not the user's syntax
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
