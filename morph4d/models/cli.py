"""``morph4d model init | pack | pack-portrait``: model folders (untrained, from CogVideoX-2B, or packed from training runs)."""

from __future__ import annotations

import os

from morph4d.errors import Morph4DError
from morph4d.validate import read_json


def _cmd_model_init(args) -> None:
    from morph4d.models.folder import init_models
    out = init_models(args.out, args.mmvdm, args.vae, args.seed, args.cogvideox)
    print(f"wrote {out / 'mmvdm'} and {out / 'vae'} (untrained unless from CogVideoX)")


def _cmd_model_pack(args) -> None:
    from morph4d.models.folder import pack_models
    for flag, folder in (("--mmvdm", args.mmvdm), ("--vae", args.vae)):
        if not os.path.isdir(folder):
            raise Morph4DError(f"{flag} {folder}: no such weights folder")
    prov = {"mmvdm": os.path.abspath(args.mmvdm), "vae": os.path.abspath(args.vae), "note": args.note}
    for name in ("mmvdm", "vae"):   # the training runs' resolved configs travel with the weights
        cfg = os.path.join(os.path.dirname(os.path.abspath(getattr(args, name))), "config.json")
        if os.path.isfile(cfg):
            prov[f"{name}_training_config"] = read_json(cfg)
    out = pack_models(args.mmvdm, args.vae, args.out, prov)
    print(f"wrote {out / 'mmvdm'}, {out / 'vae'} and {out / 'provenance.json'}")


def _cmd_model_pack_portrait(args) -> None:
    from morph4d.models.folder import pack_portrait
    if not os.path.isdir(args.unet):
        raise Morph4DError(f"{args.unet}: no such weights folder; expected RUN/unet of `morph4d train-mpi`")
    prov = {"unet": os.path.abspath(args.unet), "note": args.note}
    cfg = os.path.join(os.path.dirname(os.path.abspath(args.unet)), "config.json")
    if os.path.isfile(cfg):
        prov["training_config"] = read_json(cfg)
    out = pack_portrait(args.unet, args.out, prov)
    print(f"wrote {out} (IM-Portrait U-Net, bfloat16) and {out / 'provenance.json'}")


def register(sub) -> None:
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
    q = ms.add_parser("pack-portrait", help="a trained IM-Portrait U-Net (RUN/unet of `morph4d train-mpi`) -> a "
                      "weights folder in bfloat16 with provenance.json")
    q.add_argument("unet", help="U-Net weights folder")
    q.add_argument("--out", required=True)
    q.add_argument("--note", default=None, help="free text stored in provenance.json (e.g. the command used)")
    q.set_defaults(func=_cmd_model_pack_portrait)


__all__ = ["register"]
