"""Training the MMVDM with MVP4D's curriculum (§3.3, Table 3, S2.2); Accelerate runs it on one CPU process
here and on GPUs with DDP/FSDP/mixed precision by ``accelerate config`` + ``accelerate launch``.

Reads top to bottom: data -> forward -> loss -> backward -> step -> EMA -> log / checkpoint / samples.

1. **Data** (``TrainData``): step ``s`` draws its resolution, datasets, sequences, windows, modes, dropout,
   timesteps and noise from a generator seeded by (seed, s, process index) only, so the data order is a
   pure function of the step: resuming at step s replays exactly what an uninterrupted run would have seen.
2. **Forward** (``training_step``): frozen VAE latents; given latents (modes 2-4) and the reference enter
   clean with the b mask channel set to 1 on them (``ConditioningLayout.reference_mask``); dropped items
   get every conditioning signal and the reference zeroed (``sampling.unconditional_inputs``).
3. **Loss**: ``Diffusion.loss`` over generated latents only (the one parameterisation, STYLE habit 4).
4. **Checkpoint** (``checkpoint.pt``, plain dict, written atomically, read with ``weights_only=True``):
   model, EMA and optimizer states, the step (= the data position) and torch's RNG state, plus the
   resolved config; a run folder only resumes a checkpoint of the same config.

Outputs in the run folder: config.json, log.csv (step, stage, loss, lr, V, F, D, mode, seconds),
checkpoint.pt, samples/step_XXXXXXX.png (reference | ground truth frames, then reference | EMA sample),
and at the end model/ (raw weights) and ema/ (EMA weights), both ``MMVDM.save_pretrained`` folders.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import time
from pathlib import Path

import torch

from morph4d.conditioning.maps import ConditioningConfig, ConditioningLayout, fill_projection, layout_of
from morph4d.data.format import mix_seed, read_index
from morph4d.data.loader import MultiViewWindows, WindowConfig
from morph4d.diffusion.sampling import ddim_sample, model_denoiser, unconditional_inputs
from morph4d.diffusion.schedule import Diffusion
from morph4d.errors import Morph4DError
from morph4d.io import atomic_path, write_json
from morph4d.models.mmvdm import MMVDM, MMVDMConfig
from morph4d.models.vae import VAE_PRESETS, CausalVideoAutoencoder, CogVideoXAutoencoder
from morph4d.training.curriculum import (
    TrainConfig,
    check_precision,
    given_mask,
    sample_dataset,
    sample_dropout,
    sample_mode,
    sample_resolution,
)
from morph4d.validate import read_json
from morph4d.video import grid, write_png

CHECKPOINT = "checkpoint.pt"
LOG_FIELDS = ("step", "stage", "loss", "lr", "V", "F", "D", "mode", "seconds")


# ---------------------------------------------------------------------------------------------------
# 1. data
# ---------------------------------------------------------------------------------------------------

class TrainData:
    """Windows of every (dataset, resolution) the config asks for; batches as a pure function of the step.

    Raises ``ValueError`` at construction when a resolution fits no dataset (a sequence fits V x F when it
    has >= V views and >= F frames and a (view, frame) left over for the reference image).
    """

    def __init__(self, roots, weights, resolutions, seed: int = 0, conditioning: bool = True,
                 maps: ConditioningConfig = ConditioningConfig()):
        if not roots:
            raise Morph4DError("training needs at least one dataset folder")
        for root in roots:   # the held-out identities (data.identity.EVAL_SEEDS) never enter training
            info = read_index(root)
            if (info.get("synth") or {}).get("split") == "eval":
                raise Morph4DError(f"{root} holds the held-out evaluation identities (synthesized with --split eval); "
                                   f"they are never trained on")
        self.roots, self.seed = [str(r) for r in roots], seed
        self.weights = list(weights) if weights else [1.0] * len(self.roots)
        self.windows: dict[tuple[int, int, int, int], MultiViewWindows] = {}
        head = None
        for V, F, D in sorted(set(resolutions)):
            problems = []
            for k, root in enumerate(self.roots):
                try:
                    window = WindowConfig(views=V, frames=F, resolution=D, seed=seed, on_short="skip",
                                          conditioning=conditioning)
                    ds = MultiViewWindows(root, window, model=head, conditioning=maps)
                except ValueError as e:
                    problems.append(str(e))
                    continue
                self.windows[(k, V, F, D)] = ds
                head = ds.model
            if not self.fitting(V, F, D):
                raise Morph4DError(f"resolution {V} views x {F} frames x {D} px fits no dataset: " + "; ".join(problems))

    def fitting(self, V: int, F: int, D: int) -> list[int]:
        return [k for k in range(len(self.roots)) if (k, V, F, D) in self.windows]

    def items(self, resolution, keys: list[tuple[int, int]], epoch: int) -> dict:
        """Stack the windows ``keys`` = [(dataset, sequence index)] at ``resolution``; window randomness
        from ``epoch`` + position (MultiViewWindows seeds by (seed, epoch, index))."""
        out = []
        for b, (k, i) in enumerate(keys):
            ds = self.windows[(k, *resolution)]
            ds.set_epoch(epoch * len(keys) + b)
            out.append(ds[i])
        return {name: torch.stack([o[name] for o in out]) for name in
                ("images", "reference", "conditioning", "reference_conditioning", "projection",
                 "projection_confidence") if name in out[0]}

    def batch(self, stage, batch_size: int, position: int, g: torch.Generator) -> tuple[tuple[int, int, int], dict]:
        """A resolution (Table 3: uniform per step) and a batch at data ``position`` (seeds the windows);
        datasets mixed by weight."""
        V, F, D = sample_resolution(stage, g)
        keys = []
        for _ in range(batch_size):
            k = sample_dataset(self.fitting(V, F, D), self.weights, g)
            keys.append((k, int(torch.randint(len(self.windows[(k, V, F, D)]), (), generator=g))))
        return (V, F, D), self.items((V, F, D), keys, position)

    def validation(self, resolution) -> dict:
        """The fixed window of the sample grids: the first sequence of the first fitting dataset."""
        return self.items(resolution, [(self.fitting(*resolution)[0], 0)], epoch=-1)


# ---------------------------------------------------------------------------------------------------
# 2-3. forward and loss
# ---------------------------------------------------------------------------------------------------

def autocast(precision: str, device_type: str):
    """The forward's arithmetic for a training ``precision`` (``curriculum.PRECISIONS``): bfloat16 autocast for
    "bf16" (matmuls and convolutions in bf16, reductions and weights float32), nothing for "fp32"."""
    check_precision(precision)
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def batch_conditioning(batch: dict, vae, device) -> torch.Tensor:
    """The batch's conditioning (B, V, F_lat, C, h, w) on ``device``, with the reference projection encoded by
    ``vae`` into its layout group where the batch carries one (ours, issue 17; ``conditioning.maps``)."""
    cond = batch["conditioning"].to(device).clone()
    if "projection" not in batch:
        return cond
    layout = ConditioningLayout.from_config(ConditioningConfig(reference_projection=True))
    projected = vae.encode(batch["projection"].to(device)).float()
    return fill_projection(cond, layout, projected, batch["projection_confidence"].to(device))


def training_step(model, vae, diffusion: Diffusion, batch: dict, stage, cond_dropout: float,
                  g: torch.Generator, device, precision: str = "fp32") -> tuple[torch.Tensor, list[int]]:
    """Loss of one batch and the generation mode of each item (MVP4D §3.3; module doc, step 2). ``precision``
    applies to the frozen autoencoder's encoding (bf16: latents within ~0.003 RMS of float32's, for unit-std
    latents) and to the MMVDM's forward; the loss is float32."""
    layout = ConditioningLayout.from_config()
    device_type = torch.device(device).type
    with torch.no_grad(), autocast(precision, device_type):
        x0 = vae.encode(batch["images"].to(device)).float()                  # (B, V, F_lat, 16, h, w)
        ref = vae.encode_image(batch["reference"].to(device)).float()        # (B, 16, h, w)
        cond = batch_conditioning(batch, vae, device)                        # (B, V, F_lat, C, h, w)
    B, V, Fl = x0.shape[:3]
    modes = [sample_mode(stage, V, Fl, g) for _ in range(B)]
    given = torch.stack([given_mask(m, V, Fl) for m in modes]).to(device)   # (B, V, F_lat)
    drop = sample_dropout(cond_dropout, B, g).to(device)                     # (B,)
    t = torch.randint(diffusion.cfg.num_train_timesteps, (B,), generator=g).to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    keep = given[..., None, None, None]
    x_in = torch.where(keep, x0, diffusion.add_noise(x0, noise, t))         # given latents enter clean
    cond[:, :, :, layout.reference_mask] = keep.to(cond.dtype)               # b = 1 on given latents
    ref_cond = batch["reference_conditioning"].to(device)                    # (B, C, h, w), b = 1 already
    u_cond, u_ref, u_ref_cond = unconditional_inputs(cond, ref, ref_cond)
    cond = torch.where(drop.view(B, 1, 1, 1, 1, 1), u_cond, cond)
    ref = torch.where(drop.view(B, 1, 1, 1), u_ref, ref)
    ref_cond = torch.where(drop.view(B, 1, 1, 1), u_ref_cond, ref_cond)
    with autocast(precision, device_type):
        out = model(x_in, cond, ref, ref_cond, t)                            # float32 out (MMVDM.forward)
    return diffusion.loss(out.float(), x0, noise, t, generate=~given), modes


# ---------------------------------------------------------------------------------------------------
# 4. checkpoints, EMA, logs, samples
# ---------------------------------------------------------------------------------------------------

def config_text(cfg) -> str:
    return json.dumps(cfg.to_json(), sort_keys=True)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, cfg) -> dict | None:
    """The checkpoint at ``path`` if any; ``ValueError`` if it was written by another config."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not same_config(state.get("config"), cfg):
        raise Morph4DError(f"{path} was written by another training config; use a new --out folder or the same "
                           f"arguments (its config: {state.get('config')})")
    return state


def same_config(text: str | None, cfg) -> bool:
    """Whether a checkpoint's config text is ``cfg``. Fields the checkpoint predates count as equal when ``cfg``
    leaves them at their defaults (a newer morph4d adding an option does not orphan older runs)."""
    if text is None:
        return False
    stored, current = json.loads(text), json.loads(config_text(cfg))
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    for name in set(current) - set(stored):
        if name not in defaults or json.loads(json.dumps(defaults[name])) != current[name]:
            return False
        stored[name] = current[name]
    return stored == current


def update_ema(ema: dict, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].lerp_(v, 1 - decay)
            else:
                ema[k].copy_(v)


class CsvLog:
    """log.csv; on resume the rows after the checkpoint's step (work lost in a kill) are dropped."""

    def __init__(self, path: Path, fields, keep_until: int):
        self.path, self.fields = path, list(fields)
        rows = []
        if keep_until > 0 and path.is_file():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def load_vae(cfg: TrainConfig, device):
    """The frozen autoencoder: ``cfg.vae_path`` (ours or CogVideoX's), else a seeded ``cfg.vae`` preset."""
    if cfg.vae_path is None:
        vae = CausalVideoAutoencoder(VAE_PRESETS[cfg.vae], generator=torch.Generator().manual_seed(cfg.seed))
    elif read_json(Path(cfg.vae_path) / "config.json").get("model") == "CausalVideoAutoencoder":
        vae = CausalVideoAutoencoder.from_pretrained(cfg.vae_path)
    else:
        vae = CogVideoXAutoencoder.from_pretrained(cfg.vae_path)
    return vae.to(device).eval().requires_grad_(False)


@torch.no_grad()
def sample_grid(model, ema: dict, vae, diffusion: Diffusion, val: dict, steps: int, seed: int, path: Path,
                device) -> None:
    """Reference | ground truth frames over reference | a mode-1 DDIM sample with the EMA weights."""
    net = copy.deepcopy(model).eval()
    net.load_state_dict(ema)
    x0 = vae.encode(val["images"].to(device))
    ref = vae.encode_image(val["reference"].to(device))
    denoise = model_denoiser(net, diffusion, batch_conditioning(val, vae, device), ref,
                             val["reference_conditioning"].to(device))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    video = vae.decode(ddim_sample(denoise, diffusion, noise, steps))[0]       # (V, F, 3, D, D)
    truth, reference = val["images"][0], val["reference"][0]
    rows = [torch.cat([reference[None], v.cpu().flatten(0, 1)]) for v in (truth, video)]
    write_png(path, grid(torch.cat(rows).permute(0, 2, 3, 1), cols=1 + truth.shape[0] * truth.shape[1]))


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------

def initial_model(cfg: TrainConfig) -> MMVDM:
    """The MMVDM a run starts from: ``cfg.init``'s weights (trained with the run's noise schedule) or a fresh
    ``cfg.model`` preset carrying the run's ``snr_shift_scale``."""
    layout = ConditioningLayout.from_config(ConditioningConfig(reference_projection=cfg.reference_projection))
    if cfg.init is None:
        return MMVDM(MMVDMConfig.preset(cfg.model, snr_shift_scale=cfg.snr_shift_scale,
                                        reference_projection=cfg.reference_projection,
                                        conditioning_channels=layout.num_channels),
                     generator=torch.Generator().manual_seed(cfg.seed))
    model = MMVDM.from_pretrained(cfg.init)
    theirs = layout_of(model.config, f"--init {cfg.init}")
    if theirs != layout and cfg.reference_projection and not model.config.reference_projection:
        # MVP4D's layout grows the projection group, zero-initialised: the run starts from the init's function
        # (as from_cogvideox starts from CogVideoX's), so a trained default can learn to use the new channels
        model = model.extended(reference_projection=True, conditioning_channels=layout.num_channels)
    elif theirs != layout:
        raise Morph4DError(f"--init {cfg.init} takes the conditioning layout {theirs.describe()}, but the run's is "
                           f"{layout.describe()}; use a model of the run's layout (an MVP4D-layout model can start "
                           f"a --reference-projection run; the reverse would drop inputs)")
    if model.config.snr_shift_scale != cfg.snr_shift_scale:
        raise Morph4DError(f"--init {cfg.init} was trained with snr_shift_scale {model.config.snr_shift_scale} but "
                           f"the preset {cfg.name!r} uses {cfg.snr_shift_scale}; fine-tune it with the same schedule")
    return model


def train(cfg: TrainConfig, out_dir, stop_after: int | None = None, log=print) -> Path:
    """Run (or resume) ``cfg`` in ``out_dir``; ``stop_after``: return after that global step (tests).

    Every check of the inputs (datasets fit every resolution, checkpoint matches the config) happens
    before any training work.
    """
    from accelerate import Accelerator
    out = Path(out_dir)
    if cfg.vae_path is None and cfg.vae not in VAE_PRESETS:
        raise Morph4DError(f"preset {cfg.name!r} trains on the {cfg.vae!r} autoencoder's latents: pass --vae DIR")
    resolutions = [r for s in cfg.stages for r in s.resolutions]
    data = TrainData(cfg.datasets, cfg.weights, resolutions, cfg.seed,
                     maps=ConditioningConfig(reference_projection=cfg.reference_projection,
                                             projection_version=cfg.projection_version))
    state = load_checkpoint(out / CHECKPOINT, cfg)
    model = initial_model(cfg)
    accelerator = Accelerator()
    device, main = accelerator.device, accelerator.is_main_process   # only the main process writes files
    if cfg.batch_size % accelerator.num_processes:
        raise Morph4DError(f"batch size {cfg.batch_size} (global) does not split over {accelerator.num_processes} "
                           f"processes")
    local_batch = cfg.batch_size // accelerator.num_processes
    vae, diffusion = load_vae(cfg, device), Diffusion.for_model(model)
    val = data.validation(cfg.stages[0].resolutions[0])   # reads a first window: broken images refused before any write
    if main:
        write_json(out / "config.json", cfg.to_json())
    model.gradient_checkpointing = cfg.gradient_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.stages[0].lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema = state["ema"]
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resuming {out} at step {step}")
    model, opt = accelerator.prepare(model, opt)
    ema = {k: v.to(device) for k, v in ema.items()}
    logger = CsvLog(out / "log.csv", LOG_FIELDS, keep_until=step) if main else None
    last = cfg.total_steps if stop_after is None else min(stop_after, cfg.total_steps)
    while step < last:
        start = time.perf_counter()
        number, stage = cfg.stage_at(step)
        # every process draws its own share of the global batch from (seed, step, process)
        rank, ranks = accelerator.process_index, accelerator.num_processes
        g = torch.Generator().manual_seed(mix_seed("train-step", cfg.seed, step, rank))
        (V, F, D), batch = data.batch(stage, local_batch, step * ranks + rank, g)     # 1. data
        for group in opt.param_groups:
            group["lr"] = stage.lr
        model.train()
        loss, modes = training_step(model, vae, diffusion, batch, stage, cfg.cond_dropout, g, device,  # 2-3.
                                    cfg.precision)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)                                                      # backward
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()                                                                      # step
        update_ema(ema, accelerator.unwrap_model(model), cfg.ema_decay)
        step += 1
        if not main:
            continue
        if step % cfg.log_every == 0 or step == cfg.total_steps:                         # log
            logger.write({"step": step, "stage": number, "loss": repr(loss.item()), "lr": stage.lr, "V": V,
                          "F": F, "D": D, "mode": "-".join(map(str, modes)),
                          "seconds": f"{time.perf_counter() - start:.3f}"})
        if step % cfg.checkpoint_every == 0 or step == last:                            # checkpoint
            save_checkpoint(out / CHECKPOINT, {
                "config": config_text(cfg), "step": step, "data_position": step,
                "model": {k: v.cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()},
                "ema": {k: v.cpu() for k, v in ema.items()}, "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state()})
        if step % cfg.sample_every == 0 or step == cfg.total_steps:                     # samples
            sample_grid(accelerator.unwrap_model(model), ema, vae, diffusion, val, cfg.sample_steps, cfg.seed,
                        out / "samples" / f"step_{step:07d}.png", device)
    if main and step == cfg.total_steps:
        final = accelerator.unwrap_model(model)
        final.save_pretrained(out / "model")
        final.load_state_dict(ema)
        final.save_pretrained(out / "ema")
        log(f"done: {step} steps; weights in {out / 'model'} and {out / 'ema'}")
    return out


__all__ = ["TrainData", "batch_conditioning", "training_step", "autocast", "train", "initial_model", "save_checkpoint",
           "load_checkpoint", "same_config", "update_ema", "CsvLog", "load_vae", "sample_grid", "CHECKPOINT", "LOG_FIELDS"]
