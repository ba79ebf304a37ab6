"""``morph4d quality``: a model's quality report on held-out synthetic identities (issue 7), a preset of the
synthetic benchmark of ``morph4d eval`` (``eval.synthetic``; issue 19: one implementation of each metric).

``morph4d quality --out DIR [--model MODEL] [--identities N]`` runs, on identities with seeds 900000+
(``data.identity.EVAL_SEEDS``: the loader refuses them for training):

1. **autoencoder reconstruction**: PSNR of encode -> decode of held-out multi-view windows;
2. **generation vs ground truth**: one reference image (a render of the identity at frame 0 from a
   reference camera) -> ``morph4d generate``'s full sampling plan (``small``: 8 views x 25 frames), scored by
   ``eval`` (MVP4D S3.1: crops around the projected ground-truth head, masked by its matte; PSNR, SSIM, L1 per
   view and frame, by angle from the reference) against the **reference-projection baseline**: the reference
   image projected onto the ground-truth geometry (head and hair/glasses meshes) at frame 0 and re-rendered at
   each view and frame; surface points the reference camera does not see get the mean colour of those it sees;
3. **MVP4D Table 7 ablation** on one 17-frame window: no guidance, conventional CFG and multi-view CFG
   with all 8 views generated jointly, and multi-view CFG with the views generated 4 at a time (V = 4:
   two independent joint passes) against V = 8.

This module holds the model-side parts the benchmark calls (the baseline, the sampling plan, the ablation
window, the autoencoder windows) and the preset. Reference cameras cycle through azimuths
``morph4d.data.heldout.REFERENCE_AZIMUTHS`` (elevation 0) so that the views cover 0-70 degrees from the
reference. Nothing here is tuned on these identities; the report records what comes out. For choices
(presets, variants) run it on validation identities instead: ``--first-seed S`` (seeds S, S + 1, ...; never
the held-out ones; pick seeds outside your training data — the embedded default trained on 0-79 and 1000-1299,
and its choices were made on 5000+). Writes ``eval``'s ``report.json``, ``report.md``, ``report.csv`` and plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from morph4d.data.format import mix_seed
from morph4d.data.heldout import HeldOut
from morph4d.data.identity import EVAL_SEEDS
from morph4d.data.loader import MultiViewWindows, WindowConfig
from morph4d.data.scene import scene_vertices
from morph4d.data.synth import SynthConfig, synthesize
from morph4d.errors import Morph4DError
from morph4d.generation.generate import GenerateConfig, MultiViewGenerator, run_generate
from morph4d.generation.plan import Job
from morph4d.generation.reference import held_out_reference
from morph4d.generation.videos import read_videos
from morph4d.heads.animation import Animation
from morph4d.metrics import psnr
from morph4d.video import grid, write_png

ABLATIONS = (("none", 8), ("cfg", 8), ("multiview", 8), ("multiview", 4))


@dataclass(frozen=True)
class QualityConfig:
    identities: int = 6            # held-out identities (seeds 900000 + k)
    ablation_identities: int = 4   # of those, how many also run the Table 7 ablation
    resolution: int = 64           # the embedded default's resolution
    ae_windows: int = 8            # held-out 1 x 9-frame windows for the autoencoder PSNR
    seed: int = 0                  # sampling seed (the plan's; never tuned)
    key_steps: int | None = None   # DDIM steps (default: the small plan's 20 / 10)
    other_steps: int | None = None
    first_seed: int | None = None  # None: the held-out identities; else validation seeds first_seed + k

    def synthetic(self):
        """The preset: ``eval``'s synthetic benchmark without the avatars, with the autoencoder and ablation."""
        from morph4d.eval.synthetic import SyntheticConfig
        return SyntheticConfig(identities=self.identities, resolution=self.resolution, seed=self.seed,
                               first_seed=self.first_seed, avatars=False, ablation_identities=self.ablation_identities,
                               ae_windows=self.ae_windows, key_steps=self.key_steps, other_steps=self.other_steps)

    def check(self) -> None:
        if self.ae_windows < 1:
            raise Morph4DError(f"ae_windows must be in 1..{len(EVAL_SEEDS)}, got {self.ae_windows}")
        self.synthetic().check()


QUALITY_METRICS = ("psnr", "ssim", "l1")


def run_quality(out: str | Path, model_dir: str | None = None, cfg: QualityConfig = QualityConfig(),
                log=print) -> dict:
    """All measurements (module doc) -> ``out/report.*``; returns the report. Runs on the threads the command
    configured (``morph4d.threads``; results depend on the count in their last bits)."""
    from morph4d.eval.run import EvalConfig
    from morph4d.eval.synthetic import run_synthetic
    cfg.check()
    report = run_synthetic(out, model_dir, cfg.synthetic(), EvalConfig(metrics=QUALITY_METRICS), log)
    from morph4d.eval.report import markdown
    log(markdown(report))
    return report


def reference_projection(h: HeldOut, cameras, frames: int, supersample: int = 2) -> torch.Tensor:
    """The baseline (module doc) of a held-out identity, on its true geometry (head and hair/glasses meshes):
    (V, F, 3, H, W)."""
    from morph4d.eval.baselines import project_reference
    return project_reference(scene_vertices(h.scene, h.params)[:frames], h.scene.faces, h.reference_camera,
                             h.reference_image, cameras, supersample)


# ---------------------------------------------------------------------------------------------------
# the three measurements
# ---------------------------------------------------------------------------------------------------

def autoencoder_psnr(vae, resolution: int, windows: int, first_seed: int | None, head, data_root: Path,
                     log) -> dict:
    """Encode -> decode ``windows`` held-out windows (1 view x 9 frames at ``resolution``) of a fresh eval
    dataset (validation seeds from ``first_seed`` when given)."""
    synthesize(SynthConfig(out=str(data_root), identities=windows, views=2, frames=9,
                           resolution=resolution + resolution // 2, progress=False,
                           split="eval" if first_seed is None else "train", first_seed=first_seed),
               model=head, log=lambda *a: None)
    ds = MultiViewWindows(data_root, WindowConfig(views=1, frames=9, resolution=resolution, seed=0), model=head)
    scores = []
    with torch.no_grad():
        for i in range(len(ds)):
            video = ds[i]["images"][None]                                   # (1, 1, 9, 3, H, W)
            recon = vae.decode(vae.encode(video))
            scores.append(psnr(recon.clamp(0, 1), video))
    log(f"autoencoder: PSNR {sum(scores) / len(scores):.2f} dB over {len(scores)} held-out windows")
    return {"psnr": sum(scores) / len(scores), "windows": len(scores), "per_window": scores}


def generate_plan(model, vae, head, h: HeldOut, run_dir: Path, weights: str, seed: int = 0,
                  key_steps: int | None = None, other_steps: int | None = None) -> torch.Tensor:
    """The full ``small`` sampling plan from the reference: (V, F, 3, H, W) frames;
    ``weights``: the model's ``weights_digest`` (a run of other weights in ``run_dir`` is refused)."""
    reference = held_out_reference(h, head.name)
    animation = Animation(h.params, 25.0, head.name, f"heldout{h.seed}")
    gcfg = GenerateConfig(preset="small", guidance="multiview", seed=seed, key_steps=key_steps,
                          other_steps=other_steps)
    run_generate(run_dir, model, vae, head, reference, animation, gcfg,
                 {"quality": h.seed, "reference_azimuth": h.reference_azimuth, "model_weights": weights},
                 log=lambda *a: None)
    return read_videos(run_dir).images


def generate_window(model, vae, head, h: HeldOut, cameras, angles, guidance_kind: str, group: int,
                    steps: int, seed: int) -> torch.Tensor:
    """One 17-frame window of every view, generated ``group`` views at a time (mode 1): (V, 17, 3, H, W)."""
    Fw = 17
    reference = held_out_reference(h, head.name)
    gen = MultiViewGenerator(model, vae, head, reference, Animation(h.params, 25.0, head.name), cameras, angles,
                             Fw, guidance_kind)
    V = len(cameras)
    h8 = cameras.height // 8
    out = []
    for start in range(0, V, group):
        views = list(range(start, min(V, start + group)))
        shape = (len(views), (Fw - 1) // 4 + 1, 16, h8, h8)
        g = torch.Generator().manual_seed(mix_seed("quality-window", seed, h.seed, start))
        lat = gen(Job(f"g{start}", views, 0, 1, steps), torch.zeros(shape), torch.zeros(shape[:2], dtype=torch.bool), g)
        out.append(torch.stack([gen.decode(lat[k]) for k in range(len(views))]))
    return torch.cat(out)


def write_png_grid(path: Path, *videos: torch.Tensor) -> None:
    """Rows: each video's views at its middle frame (generated / ground truth / baseline)."""
    f = min(v.shape[1] for v in videos) // 2
    tiles = torch.cat([v[:, f] for v in videos]).permute(0, 2, 3, 1)       # (rows * V, H, W, 3)
    write_png(path, grid(tiles, cols=videos[0].shape[0], pad=1))


__all__ = ["QualityConfig", "QUALITY_METRICS", "run_quality", "reference_projection", "generate_plan",
           "generate_window", "autoencoder_psnr", "write_png_grid", "ABLATIONS"]
