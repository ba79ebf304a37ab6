"""``morph4d demo`` (the job of ``make demo``), ``morph4d avatar`` (tracked portrait -> 4D avatar) and ``morph4d
portrait`` (IM-Portrait: tracked portrait + animation -> MPI talking-head video, side views, stereo)."""

from __future__ import annotations

from morph4d.avatar.cli import add_reference_share
from morph4d.cliargs import deprecated_alias
from morph4d.generation.cli import add_generation_args
from morph4d.heads.cli import add_head_args, animation_help
from morph4d.tracking.cli import add_tracking_args


def _cmd_demo(args) -> None:
    from morph4d.pipeline.demo import DemoConfig, run_demo
    cfg = DemoConfig(out=args.out, head=args.head, flame_path=args.flame_path, animation=args.animation,
                     frames=args.frames, resolution=args.res, avatar=not args.no_avatar, portrait=not args.no_portrait)
    paths = run_demo(cfg)
    print("done: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in paths.items()))


def _cmd_portrait(args) -> None:
    from morph4d.errors import Morph4DError
    from morph4d.pipeline.portrait import PortraitConfig, run_portrait
    if (args.photo is None) == (args.reference is None):
        raise Morph4DError("give the portrait either as PHOTO (a photo, tracked first) or as --reference REF.npz (an "
                           "already tracked reference), exactly one of the two")
    cfg = PortraitConfig(reference=args.photo or args.reference, drive=args.drive, embedding=args.embedding,
                         model=args.model, out=args.out, animation=args.animation,
                         frames=args.frames, clip=args.clip, steps=args.steps, side_deg=args.side_deg,
                         baseline=args.baseline, yaw=args.yaw, pitch=args.pitch, seed=args.seed, head=args.head,
                         flame_path=args.flame_path, white_background=args.white_background)
    paths = run_portrait(cfg)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def _cmd_avatar(args) -> None:
    from morph4d.avatar.fit import FitConfig
    from morph4d.errors import Morph4DError
    from morph4d.pipeline.avatar import AvatarConfig, run_avatar
    if (args.photo is None) == (args.reference is None):
        raise Morph4DError("give the portrait either as PHOTO (a photo, tracked first) or as --reference REF.npz (an "
                           "already tracked reference), exactly one of the two")
    cfg = AvatarConfig(reference=args.photo or args.reference, out=args.out, drive=args.drive,
                       reference_res=args.res, embedding=args.embedding, model=args.model, animation=args.animation,
                       plan=args.plan, head=args.head, flame_path=args.flame_path, guidance=args.guidance,
                       seed=args.seed, key_steps=args.key_steps, other_steps=args.other_steps,
                       anchor=not args.no_anchor, fit=FitConfig(iterations=args.fit_iterations, seed=args.seed,
                                                                  reference_share=args.fit_reference_share),
                       reanimate=args.reanimate)
    paths = run_avatar(cfg)
    print(f"avatar video: {paths['video']}\nre-animated ({args.drive or args.reanimate}): {paths['reanimated']}\n"
          f"3DGS frame: {paths['ply']}\nviewer: {paths['viewer']} (serve it: morph4d view {args.out}/avatar)")


def register(sub) -> None:
    p = sub.add_parser("demo", help="render the head model, animated, from an orbit of cameras (MP4 + PNG)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--animation", default="talk", help=animation_help())
    p.add_argument("--frames", type=int, default=49, help="frames for a built-in animation (default 49)")
    p.add_argument("--res", type=int, default=256, help="video resolution in pixels (default 256)")
    deprecated_alias(p, "--resolution", "--res", "res", type=int)
    p.add_argument("--no-portrait", action="store_true",
                   help="skip IM-Portrait's talking videos (photo and synthetic person, ~1 min)")
    p.add_argument("--no-avatar", action="store_true",
                   help="skip the synthetic person -> fitted Gaussian avatar -> re-animated video stage (~1.5 min)")
    add_head_args(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("avatar", help="tracked portrait -> generated multi-view videos -> fitted 4D avatar -> MP4, "
                       ".ply, viewer (one resumable command)")
    p.add_argument("photo", nargs="?", default=None,
                   help="a portrait photo (tracked first: morph4d track), or use --reference REF.npz")
    add_generation_args(p, reference_required=False)
    p.add_argument("--out", required=True, help="run folder; a killed run resumes there")
    p.add_argument("--drive", default=None, help="a driving video: tracked, its performance re-animates the avatar "
                   "(reanimated.mp4) instead of --reanimate")
    p.add_argument("--res", type=int, default=64, help="a photo's reference crop in pixels: the generation's "
                   "resolution (64 for the embedded default, 512 at paper scale)")
    add_tracking_args(p)
    p.add_argument("--reanimate", default="surprise", help="animation the avatar is re-animated with afterwards")
    p.add_argument("--fit-iterations", type=int, default=2000)
    add_reference_share(p, "--fit-reference-share")
    p.set_defaults(func=_cmd_avatar)

    p = sub.add_parser("portrait", help="IM-Portrait: tracked portrait + animation -> talking-head video as "
                       "multiplane images: frontal, +-5 degree side views, stereo pair, depth (resumable)")
    p.add_argument("photo", nargs="?", default=None, help="a portrait photo (tracked first at the model's "
                   "resolution), or use --reference REF.npz")
    p.add_argument("--reference", default=None, help="tracked reference .npz (morph4d track PHOTO) at the model's "
                   "resolution")
    p.add_argument("--drive", default=None, help="a driving video: tracked, its performance drives the portrait "
                   "(instead of --animation)")
    add_tracking_args(p)
    p.add_argument("--model", default=None, help="IM-Portrait U-Net folder (morph4d train-mpi's RUN/unet); default: "
                   "the embedded default at morph4d/assets/portrait (scripts/train_portrait_default.sh)")
    p.add_argument("--white-background", action="store_true",
                   help="composite over white instead of the photo's own inpainted backdrop")
    p.add_argument("--out", required=True, help="run folder; a killed run resumes there")
    p.add_argument("--animation", default="talk", help=animation_help())
    p.add_argument("--frames", type=int, default=32, help="frames of a built-in animation (default 32)")
    p.add_argument("--clip", type=int, default=16, help="frames per sampled clip (default 16; the paper: 32)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per clip (default 20)")
    p.add_argument("--side-deg", type=float, default=5.0, help="side views at +- this angle (default 5)")
    p.add_argument("--baseline", type=float, default=0.064, help="stereo baseline in metres (default 0.064)")
    p.add_argument("--yaw", type=float, default=0.0, help="frontal camera orbited about the head (degrees)")
    p.add_argument("--pitch", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    add_head_args(p)
    p.set_defaults(func=_cmd_portrait)


__all__ = ["register"]
