"""``morph4d head info``, ``morph4d flame convert``, ``morph4d animation export``; and the head-model and
animation arguments every command group shares (``add_head_args``, ``animation_help``).

Each command group imports its stage's heavier modules (networks, diffusers, numba kernels) inside its
command functions, so that ``morph4d --help`` and usage errors answer in about a second.
"""

from __future__ import annotations

import argparse

from morph4d.errors import Morph4DError
from morph4d.heads import HEAD_MODELS, load_head_model
from morph4d.heads.animation import BUILTIN_ANIMATIONS, builtin_animation


def add_head_args(p: argparse.ArgumentParser, default: str = "builtin") -> None:
    p.add_argument("--head", default=default, choices=HEAD_MODELS,
                   help=f"head model: the shipped built-in head or FLAME (needs --flame-path); default {default}")
    p.add_argument("--flame-path", default=None,
                   help="FLAME 2020 generic_model.pkl, FLAME 2023 flame2023.pkl, or a converted .npz")


def animation_help(fitted: bool = False) -> str:
    """Help text of an ``--animation`` argument; ``fitted``: an avatar command, which also takes 'fitted'."""
    names = f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)})"
    if fitted:
        return (f"{names}, an animation .npz, or 'fitted' (the fitted sequence itself, with the avatar's per-frame "
                f"deformation)")
    return f"{names} or an animation .npz"


def _require_npz(out: str) -> None:
    if not out.endswith(".npz"):
        raise Morph4DError(f"the output must be an .npz file, got '{out}'")


def _cmd_head_info(args) -> None:
    model = load_head_model(args.head, flame_path=args.flame_path)
    print(model.describe())
    print("shape components:", ", ".join(model.shape_names))
    print("expression components:", ", ".join(model.expression_names))


def _cmd_flame_convert(args) -> None:
    from morph4d.heads.flame import convert_flame
    _require_npz(args.out)
    print(f"wrote {convert_flame(args.pkl, args.out)}")


def _cmd_animation_export(args) -> None:
    _require_npz(args.out)
    model = load_head_model(args.head, flame_path=args.flame_path)
    builtin_animation(args.name, model, args.frames, args.fps).save(args.out)
    print(f"wrote {args.out}")


def register(sub) -> None:
    p = sub.add_parser("head", help="head model tools")
    hs = p.add_subparsers(dest="head_command", required=True, metavar="SUBCOMMAND")
    q = hs.add_parser("info", help="print the head model's sizes and component names")
    add_head_args(q)
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
    add_head_args(q)
    q.set_defaults(func=_cmd_animation_export)


__all__ = ["add_head_args", "animation_help", "register"]
