"""``morph4d train`` and ``morph4d train-vae``: thin commands over the typed presets of
``morph4d.training.curriculum`` (the MMVDM's and the autoencoder's).

``register(subparsers)`` adds both commands to the ``morph4d`` parser; ``main(argv)`` runs them alone. Bad
input (a missing or empty data folder, a preset that does not fit the data, a checkpoint from another
config) prints ``error: ...`` and exits 2 before any training work; an operating-system failure exits 1.
A run folder that holds a checkpoint of the same config resumes from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from morph4d.conditioning.projection import PROJECTION_MAKES, PROJECTION_VERSION
from morph4d.errors import Morph4DError, run_command
from morph4d.training.curriculum import PRECISIONS, PRESETS, VAE_TRAIN_PRESETS, TrainConfig, preset, vae_preset

PRECISION_HELP = ("arithmetic of the forward pass (default: the preset's): bf16 = bfloat16 autocast, several "
                  "times faster on CPUs with native bfloat16 (avx512_bf16/AMX) and on GPUs; fp32 elsewhere")


def _folders(paths: list[str]) -> tuple[str, ...]:
    for p in paths:
        if not Path(p).is_dir():
            raise Morph4DError(f"--data {p}: no such folder")
        if not (Path(p) / "dataset.json").is_file():
            raise Morph4DError(f"--data {p}: not a morph4d dataset (no dataset.json; make one with "
                               f"'morph4d data synth' or 'morph4d data import')")
    return tuple(str(Path(p).resolve()) for p in paths)


def _weights(weights, datasets) -> tuple[float, ...]:
    if weights is None:
        return ()
    if len(weights) != len(datasets):
        raise Morph4DError(f"--weights: {len(weights)} weight(s) for {len(datasets)} --data folder(s)")
    return tuple(weights)


def train_config(args) -> TrainConfig:
    """The run's TrainConfig from ``train``'s parsed arguments: the preset with the command line's overrides."""
    datasets = _folders(args.data)
    return preset(args.preset, datasets=datasets, weights=_weights(args.weights, datasets),
                  vae_path=str(Path(args.vae).resolve()) if args.vae else None,
                  init=str(Path(args.init).resolve()) if args.init else None,
                  **({"precision": args.precision} if args.precision else {}),
                  **({} if args.reference_projection is None else
                     {"reference_projection": args.reference_projection}),
                  **({} if args.projection_version is None else {"projection_version": args.projection_version}))


def _cmd_train(args) -> None:
    from morph4d.training.train import train
    cfg = train_config(args)
    for name, folder in (("--vae", args.vae), ("--init", args.init)):
        if folder and not (Path(folder) / "config.json").is_file():
            raise Morph4DError(f"{name} {folder}: expected a save_pretrained folder with config.json")
    train(cfg, args.out, stop_after=args.max_steps)


def _cmd_train_vae(args) -> None:
    from morph4d.training.train_vae import train_vae
    datasets = _folders(args.data)
    if args.init and not (Path(args.init) / "config.json").is_file():
        raise Morph4DError(f"--init {args.init}: expected an autoencoder save_pretrained folder with config.json")
    cfg = vae_preset(args.preset, datasets=datasets, weights=_weights(args.weights, datasets),
                     init=str(Path(args.init).resolve()) if args.init else None,
                     **({"precision": args.precision} if args.precision else {}))
    train_vae(cfg, args.out, stop_after=args.max_steps)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the MMVDM with MVP4D's curriculum (resumes a run folder)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="tiny (tests), small (this CPU), paper (MVP4D Table 3)")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="a morph4d dataset folder; repeat to mix datasets")
    p.add_argument("--weights", type=float, nargs="+", help="mixing weight of each --data folder (default equal)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (config, log, checkpoint, samples)")
    p.add_argument("--vae", metavar="DIR", help="frozen autoencoder (save_pretrained folder; ours or CogVideoX's)")
    p.add_argument("--init", metavar="MODEL_DIR", help="start from these MMVDM weights (save_pretrained folder)")
    p.add_argument("--max-steps", type=int, help="stop after this global step (resume later)")
    p.add_argument("--reference-projection", action=argparse.BooleanOptionalAction, default=None,
                   help="also condition on the reference projected through the head mesh, encoded by the "
                        "autoencoder (ours, issue 17: a 76-channel conditioning layout; off = MVP4D's 59). "
                        "Default: the preset's (on for small, off for tiny and paper)")
    p.add_argument("--projection-version", type=int, choices=sorted(PROJECTION_MAKES),
                   help="the make of the reference projection to train on (1: sheet 1 cm back; 2: + mirror fill; "
                        "3: sheet 5 cm back; 4: + hair shell; 5: + hair curtain; 6: + its reach; 7: sheet 2 cm "
                        "back; 8: + face guard). Default: the preset's (small: 1, on which the embedded default was "
                        f"trained and which scored higher on validation; others: {PROJECTION_VERSION}, what generation "
                        "uses)")
    p.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p.set_defaults(func=_cmd_train)
    q = subparsers.add_parser("train-vae", help="train the small causal video autoencoder")
    q.add_argument("--preset", choices=sorted(VAE_TRAIN_PRESETS), default="small")
    q.add_argument("--data", action="append", required=True, metavar="DIR")
    q.add_argument("--weights", type=float, nargs="+")
    q.add_argument("--out", required=True, metavar="DIR", help="run folder; the autoencoder goes to DIR/vae")
    q.add_argument("--init", metavar="DIR", help="start from this trained autoencoder (needed by small_decoder)")
    q.add_argument("--max-steps", type=int, help="stop after this step (resume later)")
    q.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    q.set_defaults(func=_cmd_train_vae)


def main(argv: list[str] | None = None) -> int:
    """Run ``train ...`` or ``train-vae ...`` alone (errors through ``morph4d.errors.run_command``)."""
    parser = argparse.ArgumentParser(prog="morph4d")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_command(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
