"""``morph4d quality``: a model's quality report on held-out synthetic identities."""

from __future__ import annotations


def _cmd_quality(args) -> None:
    from morph4d.eval.quality import QualityConfig, run_quality
    cfg = QualityConfig(identities=args.identities, ablation_identities=args.ablation_identities,
                        resolution=args.res, key_steps=args.key_steps, other_steps=args.other_steps,
                        first_seed=args.first_seed, ae_windows=args.ae_windows)
    run_quality(args.out, args.model, cfg)
    print(f"wrote {args.out}/report.md and {args.out}/report.json")


def register(sub) -> None:
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


__all__ = ["register"]
