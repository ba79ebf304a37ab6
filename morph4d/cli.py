"""The ``morph4d`` command line. ``--help`` lists only commands that work.

Bad input (a missing file, a wrong value) prints ``error: ...`` and exits with status 2; an operating-system
failure (unwritable output folder) exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_demo(args) -> None:
    from morph4d.demo import DemoConfig, run_demo
    cfg = DemoConfig(out=args.out, head=args.head, flame_path=args.flame_path, animation=args.animation,
                     frames=args.frames, resolution=args.resolution, avatar=not args.no_avatar)
    paths = run_demo(cfg)
    print("done: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in paths.items()))


def _cmd_conditioning(args) -> None:
    from morph4d.conditioning_viz import VizConfig, run_viz
    run_viz(VizConfig(out=args.out, animation=args.animation, views=args.views, frames=args.frames,
                      resolution=args.res, head=args.head, flame_path=args.flame_path))


def _cmd_generate(args) -> None:
    from morph4d.generate import GenerateConfig, load_models, run_generate, weights_digest
    from morph4d.heads import load_head_model
    from morph4d.heads.animation import get_animation
    from morph4d.plan import PRESETS
    from morph4d.reference import load_reference
    if args.views not in PRESETS:
        raise ValueError(f"unknown --views preset '{args.views}'; expected one of {sorted(PRESETS)}")
    head = load_head_model(args.head, flame_path=args.flame_path)
    reference = load_reference(args.reference, head)
    animation = get_animation(args.animation, head, PRESETS[args.views].total_frames)
    animation.check_model(head)
    model, vae = load_models(args.model, args.cogvideox)
    cfg = GenerateConfig(preset=args.views, guidance=args.guidance, seed=args.seed, key_steps=args.key_steps,
                         other_steps=args.other_steps)
    identity = {"reference": os.path.abspath(args.reference), "animation": args.animation, "model":
                os.path.abspath(args.model) if args.model else "embedded-default", "head": head.name,
                "model_weights": weights_digest(args.model),
                "cogvideox": os.path.abspath(args.cogvideox) if args.cogvideox else None}
    rank, world, barrier = _distributed()
    paths = run_generate(args.out, model, vae, head, reference, animation, cfg, identity, rank, world, barrier)
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
    from morph4d.reference import reference_from_sequence
    if not args.out.endswith(".npz"):
        raise ValueError(f"the output must be an .npz file, got '{args.out}'")
    reference_from_sequence(args.sequence, args.view, args.frame, args.res).save(args.out)
    print(f"wrote {args.out}")


def _cmd_fit(args) -> None:
    from morph4d.fit import FitConfig, evaluate, fit_sequence
    cfg = FitConfig(iterations=args.iterations, resolution=args.res, seed=args.seed)
    fit_sequence(args.sequence, args.out, cfg, flame_path=args.flame_path)
    print(f"done: {args.out}/avatar.safetensors, mean PSNR over the sequence's views and frames "
          f"{evaluate(args.sequence, args.out, resolution=args.res, flame_path=args.flame_path):.2f} dB")


def _cmd_export(args) -> None:
    from morph4d.viewer import export
    out = export(args.avatar, args.out, args.format, args.animation, args.frames, args.frame, args.fps,
                 args.flame_path)
    print(f"wrote {out}")


def _cmd_view(args) -> None:
    from morph4d.viewer import cache_folder, export, serve
    if not os.path.isdir(args.avatar):
        raise FileNotFoundError(f"no avatar folder {args.avatar}; run `morph4d fit` first")
    folder = cache_folder(args.avatar, args.animation)
    export(args.avatar, folder, "html", args.animation, args.frames, fps=args.fps, flame_path=args.flame_path)
    serve(folder, args.port, open_browser=not args.no_browser)


def _cmd_render(args) -> None:
    from morph4d.fit import render_video
    out = render_video(args.avatar, args.out, args.animation, args.frames, args.res, args.orbit, args.flame_path)
    print(f"wrote {out}")


def _cmd_avatar(args) -> None:
    from morph4d.fit import FitConfig
    from morph4d.pipeline import AvatarConfig, run_avatar
    cfg = AvatarConfig(reference=args.reference, out=args.out, model=args.model, animation=args.animation,
                       views=args.views, guidance=args.guidance, seed=args.seed, key_steps=args.key_steps,
                       other_steps=args.other_steps, fit=FitConfig(iterations=args.fit_iterations, seed=args.seed),
                       reanimate=args.reanimate)
    paths = run_avatar(cfg)
    print(f"avatar video: {paths['video']}\nre-animated ({args.reanimate}): {paths['reanimated']}\n"
          f"3DGS frame: {paths['ply']}\nviewer: {paths['viewer']} (serve it: morph4d view {args.out}/avatar)")


def _cmd_quality(args) -> None:
    from morph4d.quality import QualityConfig, run_quality
    cfg = QualityConfig(identities=args.identities, ablation_identities=args.ablation_identities,
                        resolution=args.res, key_steps=args.key_steps, other_steps=args.other_steps,
                        first_seed=args.first_seed, ae_windows=args.ae_windows)
    run_quality(args.out, args.model, cfg)
    print(f"wrote {args.out}/report.md and {args.out}/report.json")


def _cmd_model_init(args) -> None:
    from morph4d.generate import init_models
    out = init_models(args.out, args.mmvdm, args.vae, args.seed, args.cogvideox)
    print(f"wrote {out / 'mmvdm'} and {out / 'vae'} (untrained unless from CogVideoX)")


def _cmd_model_pack(args) -> None:
    from morph4d.generate import pack_models
    for flag, folder in (("--mmvdm", args.mmvdm), ("--vae", args.vae)):
        if not os.path.isdir(folder):
            raise ValueError(f"{flag} {folder}: no such weights folder")
    prov = {"mmvdm": os.path.abspath(args.mmvdm), "vae": os.path.abspath(args.vae), "note": args.note}
    for name in ("mmvdm", "vae"):   # the training runs' resolved configs travel with the weights
        cfg = os.path.join(os.path.dirname(os.path.abspath(getattr(args, name))), "config.json")
        if os.path.isfile(cfg):
            with open(cfg) as fh:
                prov[f"{name}_training_config"] = json.load(fh)
    out = pack_models(args.mmvdm, args.vae, args.out, prov)
    print(f"wrote {out / 'mmvdm'}, {out / 'vae'} and {out / 'provenance.json'}")


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
    p.add_argument("--no-avatar", action="store_true",
                   help="skip the synthetic person -> fitted Gaussian avatar -> re-animated video stage (~1.5 min)")
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

    p = sub.add_parser("generate", help="reference image + animation -> multi-view videos (MVP4D sampling plan)")
    p.add_argument("--reference", required=True, help="tracked reference .npz (image + head parameters + camera)")
    p.add_argument("--animation", default="talk",
                   help=f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)}) or an animation .npz")
    p.add_argument("--views", default="small", help="preset: 120 (32 views x 89 frames), 360 (48 x 89) or small "
                   "(8 x 25, for the CPU)")
    p.add_argument("--model", default=None, help="model folder with mmvdm/ and vae/ (default: the embedded "
                   "default trained on synthetic heads, README 'Embedded default')")
    p.add_argument("--cogvideox", default=None, help="local CogVideoX-2B folder for the paper-scale autoencoder")
    p.add_argument("--guidance", default="multiview", choices=["multiview", "cfg", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key-steps", type=int, default=None, help="DDIM steps for key views (preset default)")
    p.add_argument("--other-steps", type=int, default=None, help="DDIM steps for the other jobs (preset default)")
    p.add_argument("--out", default="out/generate", help="output folder; a killed run resumes there")
    _add_head_args(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("reference", help="a tracked reference .npz from one view and frame of a dataset sequence")
    p.add_argument("--sequence", required=True, help="a sequence folder of a morph4d dataset (docs/DATA.md)")
    p.add_argument("--view", type=int, default=0)
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--res", type=int, default=64, help="size of the square head crop in pixels (default 64)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("fit", help="fit Gaussians bound to the head mesh to multi-view videos (resumable)")
    p.add_argument("sequence", help="a dataset sequence folder (docs/DATA.md) or a `morph4d generate` output folder")
    p.add_argument("--out", required=True, help="avatar folder; a stopped fit resumes there")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--res", type=int, default=None, help="fit at this square resolution (default: the images')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flame-path", default=None, help="FLAME file, for sequences tracked with FLAME")
    p.set_defaults(func=_cmd_fit)

    anim_help = (f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)}), an animation .npz, or 'fitted' (the fitted "
                 "sequence itself, with the avatar's per-frame deformation)")
    p = sub.add_parser("export", help="a fitted avatar -> one frame as a 3DGS .ply, an animated .m4da file "
                       "(docs/AVATAR_FORMAT.md) or a standalone viewer folder")
    p.add_argument("avatar", help="avatar folder written by `morph4d fit`")
    p.add_argument("--out", required=True, help="ply: a .ply file; animated: a .m4da file or a folder (gets "
                   "avatar.m4da); html: a folder (index.html + avatar.m4da, serve it over http)")
    p.add_argument("--format", default="ply", choices=["ply", "animated", "html"])
    p.add_argument("--animation", default="talk", help=anim_help)
    p.add_argument("--frame", type=int, default=0, help="the frame to write (ply; default 0)")
    p.add_argument("--frames", type=int, default=49, help="frames of a built-in animation (default 49)")
    p.add_argument("--fps", type=float, default=25.0, help="fps of a built-in animation (default 25)")
    p.add_argument("--flame-path", default=None, help="FLAME file, for avatars fitted with FLAME")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("view", help="play a fitted avatar in the browser (WebGL2 viewer served on localhost)")
    p.add_argument("avatar", help="avatar folder written by `morph4d fit`")
    p.add_argument("--animation", default="talk", help=anim_help)
    p.add_argument("--frames", type=int, default=49, help="frames of a built-in animation (default 49)")
    p.add_argument("--fps", type=float, default=25.0, help="fps of a built-in animation (default 25)")
    p.add_argument("--port", type=int, default=8000, help="localhost port (default 8000; 0: any free port)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--flame-path", default=None, help="FLAME file, for avatars fitted with FLAME")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("render", help="a fitted avatar driven by an animation (any, also new ones) -> MP4")
    p.add_argument("avatar", help="avatar folder written by `morph4d fit`")
    p.add_argument("--out", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--animation", default="talk", help=f"built-in animation ({', '.join(BUILTIN_ANIMATIONS)}), an "
                   "animation .npz for the avatar's head model, or 'fitted' (the fitted sequence, with its deformation)")
    p.add_argument("--frames", type=int, default=49, help="frames of a built-in animation (default 49)")
    p.add_argument("--res", type=int, default=256, help="square video size in pixels (default 256)")
    p.add_argument("--orbit", action="store_true", help="camera sweeps +-60 degrees around the head")
    p.add_argument("--flame-path", default=None, help="FLAME file, for avatars fitted with FLAME")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("avatar", help="tracked portrait -> generated multi-view videos -> fitted 4D avatar -> MP4, "
                       ".ply, viewer (one resumable command)")
    p.add_argument("--reference", required=True, help="tracked reference .npz (image + head parameters + camera)")
    p.add_argument("--out", required=True, help="run folder; a killed run resumes there")
    p.add_argument("--model", default=None, help="model folder (default: the embedded default)")
    p.add_argument("--animation", default="talk", help="animation of the generated videos (the fitted sequence)")
    p.add_argument("--reanimate", default="surprise", help="animation the avatar is re-animated with afterwards")
    p.add_argument("--views", default="small", help="sampling-plan preset: small (8 x 25, CPU), 120, 360")
    p.add_argument("--guidance", default="multiview", choices=["multiview", "cfg", "none"])
    p.add_argument("--key-steps", type=int, default=None)
    p.add_argument("--other-steps", type=int, default=None)
    p.add_argument("--fit-iterations", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_avatar)

    p = sub.add_parser("quality", help="quality report of a model on held-out synthetic identities (autoencoder "
                       "PSNR, generated views vs ground truth and a reference-projection baseline, Table 7 ablation)")
    p.add_argument("--model", default=None, help="model folder (default: the embedded default)")
    p.add_argument("--out", default="out/quality", help="report folder (default out/quality)")
    p.add_argument("--identities", type=int, default=6, help="held-out identities (seeds 900000 + k)")
    p.add_argument("--ablation-identities", type=int, default=4, help="of those, how many run the ablation")
    p.add_argument("--res", type=int, default=64, help="resolution (the model's; default 64)")
    p.add_argument("--key-steps", type=int, default=None)
    p.add_argument("--other-steps", type=int, default=None)
    p.add_argument("--ae-windows", type=int, default=8, help="1 x 9-frame windows (one identity each) for the "
                   "autoencoder PSNR (default 8)")
    p.add_argument("--first-seed", type=int, default=None,
                   help="validation identities first_seed + k instead of the held-out ones (for choosing presets "
                        "without tuning on the held-out seeds; pick seeds outside the training data)")
    p.set_defaults(func=_cmd_quality)

    p = sub.add_parser("model", help="model folders")
    ms = p.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    q = ms.add_parser("init", help="write an untrained MMVDM + autoencoder folder (or an MMVDM from CogVideoX-2B)")
    q.add_argument("--out", required=True)
    q.add_argument("--mmvdm", default="small", choices=["tiny", "small", "paper"])
    q.add_argument("--vae", default="small", choices=["tiny", "small"])
    q.add_argument("--cogvideox", default=None, help="local diffusers CogVideoX-2B folder to initialise from")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_model_init)
    q = ms.add_parser("pack", help="trained MMVDM + autoencoder weights -> one model folder (MMVDM in bfloat16)")
    q.add_argument("--mmvdm", required=True, help="MMVDM weights folder (e.g. RUN/ema of `morph4d train`)")
    q.add_argument("--vae", required=True, help="autoencoder weights folder (e.g. RUN/vae of `morph4d train-vae`)")
    q.add_argument("--out", required=True)
    q.add_argument("--note", default=None, help="free text stored in provenance.json (e.g. the command used)")
    q.set_defaults(func=_cmd_model_pack)

    from morph4d.data.cli import register as register_data
    from morph4d.train_cli import register as register_train
    register_data(sub)
    register_train(sub)

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
    return run_command(parser.parse_args(argv))


def run_command(args) -> int:
    """Run a parsed command; bad input -> ``error: ...`` and 2, an OS failure -> 1, never a traceback."""
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
