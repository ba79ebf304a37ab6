"""``morph4d demo`` (the job of ``make demo``) and ``morph4d avatar`` (tracked portrait -> 4D avatar)."""

from __future__ import annotations

from morph4d.cliargs import deprecated_alias
from morph4d.generation.cli import add_generation_args
from morph4d.heads.cli import add_head_args, animation_help
from morph4d.tracking.cli import add_tracking_args


def _cmd_demo(args) -> None:
    from morph4d.pipeline.demo import DemoConfig, run_demo
    cfg = DemoConfig(out=args.out, head=args.head, flame_path=args.flame_path, animation=args.animation,
                     frames=args.frames, resolution=args.res, avatar=not args.no_avatar)
    paths = run_demo(cfg)
    print("done: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in paths.items()))


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
                       fit=FitConfig(iterations=args.fit_iterations, seed=args.seed), reanimate=args.reanimate)
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
    p.set_defaults(func=_cmd_avatar)


__all__ = ["register"]
