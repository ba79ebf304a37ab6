"""``morph4d data``: synthesize datasets (``synth``), look at identities (``sheet``), import public datasets
(``import``).

``register(subparsers)`` adds the command group to the ``morph4d`` parser; ``main(argv)`` runs it alone
(``python -m morph4d.data.cli synth ...``) with the project's exit codes: bad input prints
``error: ...`` and exits 2, an operating-system failure exits 1.
"""

from __future__ import annotations

import argparse
import sys

from morph4d.data.format import MODALITIES
from morph4d.errors import Morph4DError, run_command
from morph4d.heads.cli import add_head_args


def _cmd_synth(args) -> None:
    from morph4d.data.synth import SynthConfig, synthesize
    cfg = SynthConfig(out=args.out, identities=args.identities, modality=args.modality, views=args.views,
                      frames=args.frames, resolution=args.res, split=args.split, first_seed=args.first_seed,
                      sequences_per_identity=args.sequences_per_identity, fps=args.fps,
                      progress=not args.no_progress)
    written = synthesize(cfg)
    print(f"done: {len(written)} new sequence(s) in {args.out}")


def _cmd_sheet(args) -> None:
    from morph4d.data.synth import identity_sheet
    from morph4d.heads.builtin import load_builtin_head
    from morph4d.video import write_png
    if args.identities < 1 or args.size < 16:
        raise Morph4DError("--identities must be >= 1 and --size >= 16")
    if not args.out.endswith(".png"):
        raise Morph4DError(f"the output must be a .png file, got '{args.out}'")
    seeds = range(args.first_seed, args.first_seed + args.identities)
    write_png(args.out, identity_sheet(load_builtin_head(), seeds, args.size, args.cols))
    print(f"wrote {args.out}")


def _cmd_import(args) -> None:
    from morph4d.data.importers import IMPORTERS, ImportConfig, run_import
    from morph4d.heads import load_head_model
    if args.dataset not in IMPORTERS:
        raise Morph4DError(f"unknown dataset '{args.dataset}'; importers: {', '.join(IMPORTERS)}")
    model = load_head_model(args.head, flame_path=args.flame_path)
    cfg = ImportConfig(src=args.src, fits=args.fits, out=args.out, max_side=args.max_side,
                       max_frames=args.max_frames, stride=args.stride, world_scale=args.world_scale,
                       calibration_width=args.calibration_width, mattes=args.mattes,
                       frames_as_sequences=args.frames_as_sequences, progress=not args.no_progress)
    written = run_import(args.dataset, cfg, model)
    print(f"done: {len(written)} sequence(s) imported into {args.out}")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``data synth`` and ``data import`` to a ``morph4d`` sub-parser set; returns the ``data`` parser."""
    from morph4d.data.importers import IMPORTERS
    p = subparsers.add_parser("data", help="synthetic multi-view head datasets and importers (dataset format v1)")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    q = sub.add_parser("synth", help="render a synthetic dataset (deterministic from the seeds, resumable)")
    q.add_argument("--out", required=True, help="dataset folder (created; rerun to resume)")
    q.add_argument("--identities", type=int, default=10, help="number of identities = seeds (default 10)")
    q.add_argument("--modality", default="multiview_video", choices=MODALITIES,
                   help="monocular (VFHQ-like), multiview_video (Nersemble-like, default), multiview_images "
                        "(Ava-256-like, 1 frame), multiview_360 (RenderMe-360-like)")
    q.add_argument("--views", type=int, default=None, help="views per sequence (default by modality: 1/16/24/24)")
    q.add_argument("--frames", type=int, default=None, help="frames per sequence (default 49; 1 for multiview_images)")
    q.add_argument("--res", type=int, default=256, help="image size in pixels (square, default 256)")
    q.add_argument("--split", default="train", choices=["train", "eval"],
                   help="train (default) or eval: the held-out identities, seeds 900000-900099")
    q.add_argument("--first-seed", type=int, default=None, help="first identity seed (default 0, or 900000 for eval)")
    q.add_argument("--sequences-per-identity", type=int, default=1, help="sequences per identity (default 1)")
    q.add_argument("--fps", type=float, default=25.0, help="frames per second of the animations (default 25)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_synth)

    q = sub.add_parser("sheet", help="contact sheet of synthetic identities (PNG), to look at them")
    q.add_argument("--out", default="docs/synthetic_identities.png", help="output .png")
    q.add_argument("--identities", type=int, default=16, help="how many (default 16)")
    q.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    q.add_argument("--size", type=int, default=192, help="tile size in pixels (default 192)")
    q.add_argument("--cols", type=int, default=4, help="tiles per row (default 4)")
    q.set_defaults(func=_cmd_sheet)

    q = sub.add_parser("import", help="import a public dataset you have (with your per-frame FLAME fits)")
    q.add_argument("dataset", choices=list(IMPORTERS), help="which dataset's released layout SRC has")
    q.add_argument("--src", required=True, help="your copy of the dataset")
    q.add_argument("--fits", required=True, help="folder of per-sequence fits: SEQUENCE.npz in the animation format")
    q.add_argument("--out", required=True, help="output dataset folder")
    add_head_args(q, default="flame")
    q.add_argument("--max-side", type=int, default=1024, help="downscale images so the longer side is at most this")
    q.add_argument("--max-frames", type=int, default=None, help="import at most this many frames per sequence")
    q.add_argument("--stride", type=int, default=1, help="take every n-th frame (default 1)")
    q.add_argument("--world-scale", type=float, default=None,
                   help="metres per calibration unit (default: 0.001 for ava256, else 1)")
    q.add_argument("--calibration-width", type=int, default=None,
                   help="image width the intrinsics were calibrated at (default: nersemble 2200, ava256 2668, "
                        "else the stored image width)")
    q.add_argument("--mattes", default=None, help="vfhq: folder of alpha mattes CLIP/FRAME.png (default: alpha 1)")
    q.add_argument("--frames-as-sequences", action="store_true",
                   help="renderme360: one multiview_images sequence per frame instead of one multiview_360 video")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_import)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``morph4d data ...`` alone; ``argv`` may start with ``data`` or directly with the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="morph4d")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_command(parser.parse_args(["data", *argv]))


if __name__ == "__main__":
    sys.exit(main())
