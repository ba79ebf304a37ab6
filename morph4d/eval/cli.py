"""``morph4d eval`` (the papers' metrics on any run against a ground-truth sequence, or the synthetic benchmark)
and ``morph4d quality`` (a model's quality report on held-out synthetic identities)."""

from __future__ import annotations

from morph4d.errors import Morph4DError


def _cmd_quality(args) -> None:
    from morph4d.eval.quality import QualityConfig, run_quality
    cfg = QualityConfig(identities=args.identities, ablation_identities=args.ablation_identities,
                        resolution=args.res, key_steps=args.key_steps, other_steps=args.other_steps,
                        first_seed=args.first_seed, ae_windows=args.ae_windows,
                        avatar_identities=args.avatar_identities, like_held_out=args.like_held_out)
    run_quality(args.out, args.model, cfg)
    print(f"wrote {args.out}/report.md and {args.out}/report.json")


def _runs(items: list[str]) -> dict[str, str]:
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise Morph4DError(f"--run expects NAME=DIR (a name for the table, then the folder), got '{item}'")
        if name in runs:
            raise Morph4DError(f"--run: the name '{name}' is given twice; each run needs its own name")
        runs[name.strip()] = path
    return runs


def _cmd_eval(args) -> None:
    from morph4d.eval.run import METRICS, EvalConfig
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else EvalConfig().metrics
    cfg = EvalConfig(metrics=metrics, lpips=args.lpips, inception=args.inception, i3d=args.i3d,
                     reference_view=args.reference_view)
    if args.portrait is not None:
        if args.synthetic or args.truth is not None or args.run:
            raise Morph4DError("--portrait UNET is its own benchmark (held-out identities); leave --truth / --run / "
                               "--synthetic out")
        from morph4d.eval.portrait import run_portrait_eval
        run_portrait_eval(args.out, args.portrait, args.identities, args.clip, args.clips,
                          args.key_steps or 20)
        print(f"wrote {args.out}/report.md and report.json")
        return
    if args.synthetic == (args.truth is not None):
        raise Morph4DError("give either --truth SEQUENCE with --run NAME=DIR ..., or --synthetic (the held-out "
                           f"benchmark); metrics: {', '.join(METRICS)}")
    if args.synthetic:
        if args.run or args.baselines or args.oracle_views:
            raise Morph4DError("--synthetic makes its own runs (generated, reference projection, oracle avatar, "
                               "avatar); leave --run / --baselines / --oracle-views out")
        from morph4d.eval.synthetic import SyntheticConfig, run_synthetic
        run_synthetic(args.out, args.model, SyntheticConfig(
            identities=args.identities, resolution=args.res, fit_iterations=args.fit_iterations,
            first_seed=args.first_seed, avatars=not args.no_avatars, ablation_identities=args.ablation_identities,
            ae_windows=args.ae_windows, key_steps=args.key_steps, other_steps=args.other_steps), cfg)
    else:
        given = [f for f, v in (("--first-seed", args.first_seed is not None), ("--no-avatars", args.no_avatars),
                                ("--ablation-identities", args.ablation_identities), ("--ae-windows", args.ae_windows),
                                ("--key-steps", args.key_steps is not None),
                                ("--other-steps", args.other_steps is not None)) if v]
        if given:
            raise Morph4DError(f"{', '.join(given)}: options of the synthetic benchmark; add --synthetic or leave "
                               f"them out")
        from morph4d.eval.run import run_eval
        views = [v.strip() for v in args.oracle_views.split(",")] if args.oracle_views is not None else None
        if views is not None and not args.baselines:
            raise Morph4DError("--oracle-views chooses the oracle avatar's training views; add --baselines")
        run_eval(args.out, args.truth, _runs(args.run or []), cfg, flame_path=args.flame_path,
                 baselines=args.baselines, oracle_views=views, fit_iterations=args.fit_iterations)
    print(f"wrote {args.out}/report.md, report.csv, report.json, per_angle.png and per_frame.png")


def register(sub) -> None:
    p = sub.add_parser("quality", help="quality report of a model on held-out synthetic identities (autoencoder "
                       "PSNR, generated views vs ground truth and a reference-projection baseline, Table 7 ablation, "
                       "our avatar vs the oracle avatar): a preset of `morph4d eval --synthetic --metrics "
                       "psnr,ssim,l1 --identities 6 --ablation-identities 4 --ae-windows 8` with the avatars of 2")
    p.add_argument("--model", default=None, help="model folder (default: the embedded default)")
    p.add_argument("--out", default="out/quality", help="report folder (default out/quality)")
    p.add_argument("--identities", type=int, default=6, help="held-out identities (seeds 900000 + k)")
    p.add_argument("--ablation-identities", type=int, default=4, help="of those, how many run the ablation")
    p.add_argument("--avatar-identities", type=int, default=2,
                   help="of those, how many fit the oracle avatar and ours (the gap at held-out views and frames; "
                        "0 leaves the fits out)")
    p.add_argument("--res", type=int, default=64, help="resolution (the model's; default 64)")
    p.add_argument("--key-steps", type=int, default=None)
    p.add_argument("--other-steps", type=int, default=None)
    p.add_argument("--ae-windows", type=int, default=8, help="1 x 9-frame windows (one identity each) for the "
                   "autoencoder PSNR (default 8)")
    p.add_argument("--first-seed", type=int, default=None,
                   help="validation identities first_seed + k instead of the held-out ones (for choosing presets "
                        "without tuning on the held-out seeds; pick seeds outside the training data)")
    p.add_argument("--like-held-out", action="store_true",
                   help="with --first-seed: for each held-out identity the next validation seed with its hair style "
                        "(the held-out set's mix of long, medium, curly, short hair), not first_seed + k")
    p.set_defaults(func=_cmd_quality)

    e = sub.add_parser("eval", help="the papers' metrics (PSNR, SSIM, LPIPS, JOD, RE, CSIM, AKD, AED, L1, FID, FVD) "
                       "of runs against a ground-truth sequence, or the synthetic benchmark (--synthetic)")
    e.add_argument("--truth", default=None, help="ground truth: a dataset sequence folder (format v1; synthetic or "
                   "imported), RGBA images with the foreground matte")
    e.add_argument("--run", action="append", metavar="NAME=DIR", help="a run to score (repeatable): a `morph4d "
                   "generate` folder, a dataset sequence with the truth's cameras, or a fitted avatar folder")
    e.add_argument("--baselines", action="store_true", help="with --truth: add the reference projection (its "
                   "reference view's frame 0 on the sequence's head model) and the oracle avatar (fitted to the "
                   "ground-truth videos) to the table, as --synthetic does")
    e.add_argument("--oracle-views", default=None, help="--baselines: comma-separated views the oracle avatar is "
                   "fitted to (default: all; the others are novel views for it)")
    e.add_argument("--synthetic", action="store_true", help="the benchmark on held-out synthetic identities: "
                   "generated views, the reference-projection baseline, the oracle avatar and our avatar")
    e.add_argument("--portrait", default=None, metavar="UNET", help="IM-Portrait's benchmark on held-out identities "
                   "for a U-Net folder (morph4d train-mpi's RUN/unet): frontal and +-5 degree side views against "
                   "exact ground truth, MPI vs 2D + depth lifting, drift of scheduled vs constant guidance")
    e.add_argument("--clip", type=int, default=16, help="--portrait: frames per clip (default 16)")
    e.add_argument("--clips", type=int, default=3, help="--portrait: clips per video (default 3)")
    e.add_argument("--out", default="out/eval", help="report folder (default out/eval)")
    e.add_argument("--metrics", default=None, help="comma-separated subset (default: every metric that needs no "
                   "user file; lpips / fid / fvd join when their network is given)")
    e.add_argument("--reference-view", default=None, help="the truth's view the reference photo was taken from "
                   "(angles are measured from it)")
    e.add_argument("--lpips", default=None, help="TorchScript LPIPS file (see docs; nothing is downloaded)")
    e.add_argument("--inception", default=None, help="TorchScript Inception for FID (inception-2015-12-05.pt)")
    e.add_argument("--i3d", default=None, help="TorchScript I3D for FVD (i3d_torchscript.pt)")
    e.add_argument("--flame-path", default=None, help="FLAME file, for ground truth tracked with FLAME")
    e.add_argument("--model", default=None, help="--synthetic: model folder (default: the embedded default)")
    e.add_argument("--identities", type=int, default=2, help="--synthetic: held-out identities (default 2)")
    e.add_argument("--res", type=int, default=64, help="--synthetic: resolution (the model's; default 64)")
    e.add_argument("--fit-iterations", type=int, default=600, help="--synthetic / --baselines: iterations of each "
                   "avatar fit")
    e.add_argument("--no-avatars", action="store_true", help="--synthetic: leave out the two avatar runs (fits)")
    e.add_argument("--ablation-identities", type=int, default=0, help="--synthetic: of the identities, how many "
                   "also run MVP4D's Table 7 guidance / joint-views ablation (default 0)")
    e.add_argument("--ae-windows", type=int, default=0, help="--synthetic: held-out windows for the autoencoder's "
                   "reconstruction PSNR (default 0: not measured)")
    e.add_argument("--first-seed", type=int, default=None, help="--synthetic: validation identities first_seed + k "
                   "instead of the held-out ones (for choices; never tune on the held-out seeds)")
    e.add_argument("--key-steps", type=int, default=None, help="--synthetic: DDIM steps of the key views; "
                   "--portrait: DDIM steps per clip (default 20)")
    e.add_argument("--other-steps", type=int, default=None, help="--synthetic: DDIM steps of the other views")
    e.set_defaults(func=_cmd_eval)


__all__ = ["register"]
