"""``morph4d train-mpi``: train IM-Portrait's U-Net on our datasets (``portrait.train``)."""

from __future__ import annotations


def _cmd_train_mpi(args) -> None:
    from morph4d.portrait.train import train_portrait, train_preset
    overrides = {k: v for k, v in (("bootstrap_steps", args.bootstrap_steps), ("geometry_steps", args.geometry_steps),
                                   ("batch_size", args.batch_size), ("seed", args.seed)) if v is not None}
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
    p.set_defaults(func=_cmd_train_mpi)


__all__ = ["register"]
