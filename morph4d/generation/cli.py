"""``morph4d generate`` (reference + animation -> multi-view videos) and ``morph4d reference`` (a tracked
reference .npz from a dataset sequence)."""

from __future__ import annotations

import os

from morph4d.cliargs import deprecated_alias
from morph4d.diffusion.sampling import GUIDANCE_KINDS
from morph4d.errors import Morph4DError
from morph4d.generation.plan import PRESETS
from morph4d.heads.cli import add_head_args, animation_help

PLANS = tuple(PRESETS)


def add_generation_args(p, reference_required: bool = True) -> None:
    """Arguments of a generation, shared by ``generate`` and ``avatar`` (``prepare_generation``'s inputs)."""
    p.add_argument("--reference", required=reference_required,
                   help="tracked reference .npz (image + head parameters + camera)")
    p.add_argument("--animation", default="talk", help=animation_help() + " (drives the generated videos)")
    p.add_argument("--plan", default="small", choices=PLANS, help="sampling-plan preset: 120 (32 views x 89 frames), "
                   "360 (48 x 89) or small (8 x 25, for the CPU; default)")
    deprecated_alias(p, "--views", "--plan", "plan", choices=PLANS)
    p.add_argument("--model", default=None, help="model folder with mmvdm/ and vae/ (default: the embedded "
                   "default trained on synthetic heads, README 'Embedded default')")
    p.add_argument("--guidance", default="multiview", choices=GUIDANCE_KINDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key-steps", type=int, default=None, help="DDIM steps for key views (preset default)")
    p.add_argument("--other-steps", type=int, default=None, help="DDIM steps for the other jobs (preset default)")
    p.add_argument("--no-anchor", action="store_true", help="sample as MVP4D does, without pulling the sampling "
                   "towards the reference projected through the head mesh (ours, on by default; README 'Embedded "
                   "default')")
    add_head_args(p)


def generate_config(args):
    from morph4d.generation.generate import GenerateConfig
    return GenerateConfig(preset=args.plan, guidance=args.guidance, seed=args.seed, key_steps=args.key_steps,
                          other_steps=args.other_steps, anchor=not args.no_anchor)


def _cmd_generate(args) -> None:
    from morph4d.generation.generate import plan_cost, prepare_generation
    generation = prepare_generation(args.reference, args.animation, generate_config(args), head=args.head,
                                    flame_path=args.flame_path, model=args.model, cogvideox=args.cogvideox)
    if args.dry_run:
        c = plan_cost(generation)
        print(f"plan '{args.plan}': {c['views']} views, windows of {c['frames_per_window']} frames at "
              f"{c['resolution']} px; guidance {args.guidance}; MMVDM {c['layers']} layers x {c['width']} wide\n"
              f"jobs {c['jobs']}, DDIM steps {c['steps']}, joint passes {c['joint']} (up to "
              f"{c['tokens_joint_max']:,} tokens), single-view passes {c['single']} ({c['tokens_single']:,} tokens)\n"
              f"estimated {c['flop'] / 1e12:,.1f} TFLOP in the transformer blocks; nothing was run or written")
        return
    rank, world, barrier = _distributed()
    paths = generation.run(args.out, rank, world, barrier)
    if paths:
        print(f"done: {paths['grid']}, manifest {paths['manifest']}")


def _distributed():
    """(rank, world size, barrier) under torchrun / accelerate launch (WORLD_SIZE > 1), else (0, 1, no-op)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, (lambda: None)
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), dist.barrier


def _cmd_reference(args) -> None:
    from morph4d.generation.reference import reference_from_sequence
    if not args.out.endswith(".npz"):
        raise Morph4DError(f"the output must be an .npz file, got '{args.out}'")
    reference_from_sequence(args.sequence, args.view, args.frame, args.res).save(args.out)
    print(f"wrote {args.out}")


def register(sub) -> None:
    p = sub.add_parser("generate", help="reference image + animation -> multi-view videos (MVP4D sampling plan)")
    add_generation_args(p)
    p.add_argument("--cogvideox", default=None, help="local CogVideoX-2B folder for the paper-scale autoencoder")
    p.add_argument("--out", default="out/generate", help="output folder; a killed run resumes there")
    p.add_argument("--dry-run", action="store_true", help="check the inputs and print the plan's jobs, steps, "
                   "network passes, tokens and estimated FLOP, without running it (to size a GPU run)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("reference", help="a tracked reference .npz from one view and frame of a dataset sequence")
    p.add_argument("--sequence", required=True, help="a sequence folder of a morph4d dataset (docs/DATA.md)")
    p.add_argument("--view", type=int, default=0)
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--res", type=int, default=64, help="size of the square head crop in pixels (default 64)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=_cmd_reference)


__all__ = ["PLANS", "add_generation_args", "generate_config", "register"]
