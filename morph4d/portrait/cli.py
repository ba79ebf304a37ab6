"""``morph4d train-mpi``: train IM-Portrait's U-Net on our datasets (``portrait.train``)."""

from __future__ import annotations


def _cmd_train_mpi(args) -> None:
    from morph4d.portrait.train import train_portrait, train_preset
    overrides = {k: v for k, v in (("bootstrap_steps", args.bootstrap_steps), ("geometry_steps", args.geometry_steps),
                                   ("batch_size", args.batch_size), ("seed", args.seed),
                                   ("lpips", args.lpips)) if v is not None}
    if args.no_pseudo_gt:
        overrides["pseudo_gt"] = False
    cfg = train_preset(args.preset, data=tuple(args.data or ()), **overrides)
    out = train_portrait(cfg, args.out)
    print(f"wrote {out}/unet (IM-Portrait U-Net), log.csv, config.json")


def register(sub) -> None:
    p = sub.add_parser("train-mpi", help="train IM-Portrait's space-time U-Net (MPI outputs) on morph4d datasets: "
                       "colour bootstrap, then geometry with L_mpi / L_side (resumable)")
    p.add_argument("--data", action="append", metavar="DIR", help="dataset folder (repeatable)")
    p.add_argument("--out", required=True, help="run folder (rerun to resume)")
    p.add_argument("--preset", default="small", help="tiny (tests) or small (CPU default; default)")
    p.add_argument("--bootstrap-steps", type=int, default=None)
    p.add_argument("--geometry-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lpips", metavar="FILE", default=None,
                   help="a TorchScript LPIPS network (two images in [-1, 1] -> distances) for the supplement's LPIPS "
                        "term (weight 0.1); none ships offline, so by default training runs without it")
    p.add_argument("--no-pseudo-gt", action="store_true",
                   help="L_side's noisy input is the exact side view of our multi-view data at every noise level, "
                        "instead of the paper's pseudo ground truth at large noise (the reference projected "
                        "through the head mesh)")
    p.set_defaults(func=_cmd_train_mpi)


__all__ = ["register"]
