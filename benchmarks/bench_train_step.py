"""Benchmark: seconds per training step of the ``small`` curriculum (the embedded default's recipe), stage by stage,
with and without the reference-projection group (ours, issue 17), on this CPU.

A step is everything ``morph4d train`` does per iteration: build the batch (crops, head-model maps and, with the
projection group, the reference rendered through the head mesh and the matte sheet into every view and frame),
encode it with the frozen autoencoder, the MMVDM's forward and backward in bfloat16 autocast, the optimiser and
the EMA. Each stage runs ``--steps`` steps from a fresh model on a small synthetic dataset (the same generator
and sizes as ``scripts/train_default.sh``: videos of 8 views x 17 frames and multi-view images, 96 px); the mean
of all but the first two steps is reported, and the ratio with / without the projection group. The stage lengths
of ``curriculum.SMALL`` are chosen from these numbers (its comment).
Usage: python benchmarks/bench_train_step.py [--steps 12] [--identities 4]
"""

import argparse
import csv
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_conditioning.py

import torch

from morph4d.data.synth import SynthConfig, synthesize
from morph4d.models.folder import DEFAULT_MODEL
from morph4d.training.curriculum import SMALL
from morph4d.training.train import train


def stage_seconds(data: list[str], projection: bool, stage_index: int, steps: int, out: Path) -> float:
    cfg = replace(SMALL, datasets=tuple(data), weights=(2.0, 1.0), vae_path=str(DEFAULT_MODEL / "vae"),
                  reference_projection=projection, sample_every=10 ** 9, checkpoint_every=10 ** 9,
                  stages=(replace(SMALL.stages[stage_index], iterations=steps),))
    train(cfg, out, log=lambda *a: None)
    with open(out / "log.csv") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)][2:]
    return sum(seconds) / len(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="steps per stage and layout (the first 2 are not timed)")
    ap.add_argument("--identities", type=int, default=4, help="identities per synthetic dataset")
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps must be >= 3 (the first two steps are warm-up)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = [str(root / "video"), str(root / "images")]
        synthesize(SynthConfig(out=data[0], identities=args.identities, views=8, frames=17, resolution=96,
                               progress=False), log=lambda *a: None)
        synthesize(SynthConfig(out=data[1], modality="multiview_images", identities=args.identities,
                               first_seed=1000, views=8, resolution=96, progress=False), log=lambda *a: None)
        for i, stage in enumerate(SMALL.stages):
            plain, proj = (stage_seconds(data, p, i, args.steps, root / f"run{i}_{int(p)}") for p in (False, True))
            print(f"stage {i + 1} ({stage.iterations} iterations in the preset): MVP4D's 59 channels {plain:.3f} s/step"
                  f"   + projection group {proj:.3f} s/step   ratio {proj / plain:.2f}x")


if __name__ == "__main__":
    main()
