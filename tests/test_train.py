"""Training: every stage of the tiny curriculum runs, a SIGKILLed run resumes to the same weights and log,
the paper preset is MVP4D's Table 3, mode / dropout frequencies, given latents (clean, b = 1, not in the
loss), autoencoder training, and CLI errors before any work."""

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from morph4d.conditioning.maps import ConditioningConfig, ConditioningLayout
from morph4d.conditioning.projection import PROJECTION_VERSION
from morph4d.data.synth import SynthConfig, synthesize
from morph4d.diffusion.schedule import Diffusion, DiffusionConfig
from morph4d.models.mmvdm import MMVDM, MMVDMConfig
from morph4d.models.vae import CausalVideoAutoencoder
from morph4d.threads import torch_threads
from morph4d.training.cli import main, register, train_config
from morph4d.training.curriculum import PAPER, Stage, given_mask, preset, sample_dropout, sample_mode, vae_preset
from morph4d.training.train import CHECKPOINT, TrainData, initial_model, load_vae, train, training_step
from morph4d.training.train_vae import train_vae

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "mv"
    with torch_threads(1):
        synthesize(SynthConfig(out=str(out), identities=3, modality="multiview_video", views=4, frames=9,
                               resolution=32, progress=False), log=lambda *_: None)
    return out


# Training runs in fresh processes with one thread: bit-exact results need the same thread setup, and a
# process that already ran other work (the synthesiser) can pick other float kernels (last-bit differences).
RUN = """
import sys, time, torch
torch.set_num_threads(1)
import morph4d.training.train as T
from morph4d.training.curriculum import preset
write = T.CsvLog.write
def hanging_write(self, row):   # hang after the log row of step 3 (one step past the step-2 checkpoint)
    write(self, row)
    if row["step"] == 3:
        print("hanging", flush=True)
        time.sleep(600)
if sys.argv[3] == "hang":
    T.CsvLog.write = hanging_write
T.train(preset("tiny", datasets=(sys.argv[1],)), sys.argv[2], log=lambda *_: None)
"""


def run(dataset, out, mode="run") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(RUN), str(dataset), str(out), mode],
                            stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    assert run(dataset, out).wait() == 0
    return out


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_tiny_preset_runs_every_stage(full_run):
    log = rows(full_run / "log.csv")
    cfg = preset("tiny")
    assert [int(r["step"]) for r in log] == list(range(1, cfg.total_steps + 1))
    assert {r["stage"] for r in log} == {"1", "2", "3"}
    assert all(set(r["mode"].split("-")) == {"1"} for r in log if r["stage"] == "1")
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in log)
    assert (full_run / "config.json").is_file() and sorted(p.name for p in (full_run / "samples").iterdir())
    ema, raw = MMVDM.from_pretrained(full_run / "ema"), MMVDM.from_pretrained(full_run / "model")
    assert not torch.equal(ema.proj_out.weight, raw.proj_out.weight)   # EMA lags the raw weights


def test_sigkilled_run_resumes_exactly(dataset, full_run, tmp_path):
    out = tmp_path / "killed"
    proc = run(dataset, out, "hang")
    try:
        assert proc.stdout.readline().strip() == "hanging"
        assert (out / CHECKPOINT).is_file()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [r["step"] for r in rows(out / "log.csv")] == ["1", "2", "3"]
    assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 2
    assert run(dataset, out).wait() == 0
    a = torch.load(out / CHECKPOINT, weights_only=True)
    b = torch.load(full_run / CHECKPOINT, weights_only=True)
    assert a["step"] == b["step"] == preset("tiny").total_steps
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert rows(out / "log.csv") == rows(full_run / "log.csv")


def test_paper_preset_is_table_3():
    assert PAPER.batch_size == 64 and PAPER.cond_dropout == 0.1 and len(PAPER.stages) == 3
    s1, s2, s3 = PAPER.stages
    assert (s1.iterations, s1.lr, s1.p_given_views, s1.p_given_frames) == (30_000, 1e-4, 0.0, 0.0)
    assert s1.resolutions == ((1, 49, 256), (2, 29, 256), (4, 9, 256), (12, 1, 256))
    assert (s2.iterations, s2.lr, s2.p_given_views, s2.p_given_frames) == (40_000, 5e-5, 0.25, 0.25)
    assert s2.resolutions == ((1, 49, 512), (2, 29, 512), (4, 9, 512), (12, 1, 512), (8, 29, 512), (16, 9, 512),
                              (4, 49, 256), (8, 29, 256))
    assert (s3.iterations, s3.lr, s3.p_given_views, s3.p_given_frames) == (5_000, 2e-5, 0.25, 0.25)
    assert s3.resolutions == ((1, 49, 512), (4, 49, 512), (16, 1, 512))
    assert PAPER.total_steps == 75_000 and PAPER.model == "paper"


def test_mode_frequencies():
    g = torch.Generator().manual_seed(0)
    s1, s2 = PAPER.stages[:2]
    counts = torch.bincount(torch.tensor([sample_mode(s2, 4, 13, g) for _ in range(4000)]), minlength=5)[1:]
    assert torch.allclose(counts / 4000, torch.tensor([0.5625, 0.1875, 0.1875, 0.0625]), atol=0.025)
    assert {sample_mode(s1, 4, 13, g) for _ in range(500)} == {1}
    assert {sample_mode(s2, 1, 13, g) for _ in range(500)} == {1, 3}      # V = 1: never views given
    assert {sample_mode(s2, 4, 3, g) for _ in range(500)} == {1, 2}       # 3 latent frames: never frames given
    assert given_mask(4, 4, 13).sum() == 2 * 13 + 2 * 3


def test_conditioning_dropout_rate():
    drop = sample_dropout(0.1, 20_000, torch.Generator().manual_seed(1))
    assert abs(drop.float().mean().item() - 0.1) < 0.01


def test_training_step_inputs(dataset):
    """Given latents enter clean with b = 1; dropped items see zero conditioning and reference."""
    data = TrainData([dataset], (), [(2, 5, 32)])
    stage = Stage(1, 1e-3, ((2, 5, 32),), p_given_views=1.0)
    (V, F, D), batch = data.batch(stage, 3, 0, torch.Generator().manual_seed(0))
    vae, diffusion, seen = load_vae(preset("tiny"), "cpu"), Diffusion(), {}

    def model(x, cond, ref, ref_cond, t):
        seen.update(x=x, cond=cond, ref=ref, ref_cond=ref_cond)
        return torch.zeros_like(x)

    b = ConditioningLayout.from_config().reference_mask
    for dropout in (0.0, 1.0):
        _, modes = training_step(model, vae, diffusion, batch, stage, dropout, torch.Generator().manual_seed(0), "cpu")
        assert modes == [2, 2, 2]
        x0 = vae.encode(batch["images"])
        assert torch.equal(seen["x"][:, 0], x0[:, 0]) and not torch.allclose(seen["x"][:, 1], x0[:, 1])
        if dropout == 0.0:
            assert torch.all(seen["cond"][:, 0, :, b] == 1) and torch.all(seen["cond"][:, 1, :, b] == 0)
            assert seen["ref"].abs().sum() > 0
        else:
            assert all(seen[k].abs().sum() == 0 for k in ("cond", "ref", "ref_cond"))


def test_small_preset_conditions_on_the_reference_projection_and_the_flag_overrides_any_preset(dataset):
    """Issue 17: the small preset (the embedded default's recipe) uses the projection group; tiny and paper keep
    MVP4D's 59 channels; --reference-projection / --no-reference-projection override whichever preset."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def projection(*extra):
        args = parser.parse_args(["train", "--data", str(dataset), "--out", "unused", *extra])
        return train_config(args).reference_projection

    assert projection() is True and projection("--preset", "small") is True
    assert projection("--preset", "tiny") is False and projection("--preset", "paper") is False
    assert projection("--no-reference-projection") is False
    assert projection("--preset", "paper", "--reference-projection") is True
    # the make of the projection trained on: small the first (the shipped default's), others the newest; the flag
    # overrides; an unknown make is a usage error
    def make(*extra):
        return train_config(parser.parse_args(["train", "--data", str(dataset), "--out", "unused", *extra])) \
            .projection_version
    assert make() == 1 and make("--preset", "tiny") == make("--preset", "paper") == PROJECTION_VERSION
    assert make("--projection-version", "3") == 3 and make("--preset", "paper", "--projection-version", "2") == 2
    with pytest.raises(SystemExit):
        make("--projection-version", str(PROJECTION_VERSION + 1))


def test_reference_projection_enters_encoded_and_other_layouts_are_refused(dataset, tmp_path):
    """Issue 17 (ours): with reference_projection the batch carries the projection video, encoded by the same
    autoencoder as the images into the layout's projection group (+ its confidence), dropped with the rest; the
    run's MMVDM takes 76 channels; an --init model of MVP4D's 59-channel layout starts it with the new channels' weights
    zero (the same function), and the reverse is refused naming both layouts."""
    maps = ConditioningConfig(reference_projection=True)
    lay = ConditioningLayout.from_config(maps)
    data = TrainData([dataset], (), [(2, 5, 32)], maps=maps)
    stage = Stage(1, 1e-3, ((2, 5, 32),), p_given_views=1.0)
    _, batch = data.batch(stage, 2, 0, torch.Generator().manual_seed(0))
    assert batch["projection"].shape == (2, 2, 5, 3, 32, 32)
    vae, seen = load_vae(preset("tiny"), "cpu"), {}

    def model(x, cond, ref, ref_cond, t):
        seen.update(cond=cond)
        return torch.zeros_like(x)

    for dropout in (0.0, 1.0):
        training_step(model, vae, Diffusion(), batch, stage, dropout, torch.Generator().manual_seed(0), "cpu")
        if dropout == 0.0:
            torch.testing.assert_close(seen["cond"][:, :, :, lay.projection][:, :, :, :16],
                                       vae.encode(batch["projection"]))
            assert torch.equal(seen["cond"][:, :, :, lay.projection][:, :, :, 16:], batch["projection_confidence"])
        else:
            assert seen["cond"].abs().sum() == 0
    assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "p"),
                 "--reference-projection", "--max-steps", "1"]) == 0
    assert json.loads((tmp_path / "p" / "config.json").read_text())["reference_projection"] is True
    state = torch.load(tmp_path / "p" / CHECKPOINT, weights_only=True)
    assert state["model"]["patch_embed.weight"].shape[1] == 16 + 76
    # an MVP4D-layout model starts a projection run with the new channels' weights zero: the same function
    g = torch.Generator().manual_seed(0)
    plain = MMVDM(MMVDMConfig.preset("tiny", snr_shift_scale=preset("tiny").snr_shift_scale), generator=g)
    with torch.no_grad():  # a trained-like model: the zero-initialised output heads would hide any difference
        for w in plain.parameters():
            w.normal_(0, 0.1, generator=g)
    plain.save_pretrained(tmp_path / "plain")
    grown = initial_model(preset("tiny", datasets=(str(dataset),), reference_projection=True,
                                 init=str(tmp_path / "plain")))
    assert grown.config.conditioning_channels == 76 and grown.config.reference_projection
    x, ref = torch.randn(1, 2, 2, 16, 4, 4, generator=g), torch.randn(1, 16, 4, 4, generator=g)
    cond, ref_cond = torch.randn(1, 2, 2, 76, 4, 4, generator=g), torch.randn(1, 76, 4, 4, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        out = grown(x, cond, ref, ref_cond, t)
        assert out.abs().mean() > 0.01
        torch.testing.assert_close(out, plain(x, cond[:, :, :, :59], ref, ref_cond[:, :59], t))
        assert grown.patch_embed.weight[:, 16 + 59:].abs().sum() == 0
    # the reverse would drop inputs: refused, naming both layouts, nothing written
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(ValueError, match=r"\(76 channels\).*\(59 channels\)"):
        train(preset("tiny", datasets=(str(dataset),), init=str(tmp_path / "grown")), tmp_path / "q",
              log=lambda *_: None)
    assert not (tmp_path / "q").exists()


def test_loss_ignores_given_latents():
    g = torch.Generator().manual_seed(0)
    diffusion = Diffusion()
    x0, noise, out = (torch.randn(2, 4, 5, 16, 2, 2, generator=g) for _ in range(3))
    t = torch.tensor([10, 900])
    generate = ~torch.stack([given_mask(4, 4, 5), given_mask(1, 4, 5)])
    perturbed = out.clone()
    perturbed[~generate] += 100.0
    assert torch.equal(diffusion.loss(out, x0, noise, t, generate), diffusion.loss(perturbed, x0, noise, t, generate))
    perturbed[generate] += 1.0
    assert diffusion.loss(perturbed, x0, noise, t, generate) > diffusion.loss(out, x0, noise, t, generate)


def test_vae_training_reduces_reconstruction(dataset, tmp_path):
    cfg = vae_preset("tiny", datasets=(str(dataset),), iterations=24, frames=1, checkpoint_every=12)
    train_vae(cfg, tmp_path, log=lambda *_: None)
    with (tmp_path / "log.csv").open() as f:
        l1 = [float(r["l1"]) for r in csv.DictReader(f)]
    assert sum(l1[-4:]) / 4 < 0.8 * sum(l1[:4]) / 4
    vae = CausalVideoAutoencoder.from_pretrained(tmp_path / "vae")
    assert vae.scaling_factor != 1.0 and vae.config.channels == (8, 8, 16)


def test_patch_vae_training_starts_from_pca_and_mixes_single_frames(dataset, tmp_path):
    """The patch autoencoder starts from its data's PCA (step 1's loss far below a random start), some steps
    train on single frames with their own batch size, and a resumed run matches an uninterrupted one."""
    cfg = vae_preset("tiny", datasets=(str(dataset),), vae="tiny_patch", iterations=8, frames=5,
                     checkpoint_every=4, image_fraction=0.5, image_batch_size=3, warmup=2, cosine=True)
    train_vae(cfg, tmp_path / "a", log=lambda *_: None)
    log = list(csv.DictReader((tmp_path / "a" / "log.csv").open()))
    assert {r["F"] for r in log} == {"1", "5"}
    first = {}
    for name in ("tiny", "tiny_patch"):   # step 1 on the same batch: a random start vs the PCA start
        train_vae(vae_preset("tiny", datasets=(str(dataset),), vae=name, iterations=1, frames=5), tmp_path / name,
                  log=lambda *_: None)
        first[name] = float(next(csv.DictReader((tmp_path / name / "log.csv").open()))["l1"])
    assert first["tiny_patch"] < 0.5 * first["tiny"], first
    assert [float(r["lr"]) for r in log][:4] == pytest.approx([cfg.lr / 2, cfg.lr, cfg.lr, cfg.lr * 0.5 * (1 + math.cos(math.pi / 6))], rel=1e-12)
    train_vae(cfg, tmp_path / "b", stop_after=4, log=lambda *_: None)
    train_vae(cfg, tmp_path / "b", log=lambda *_: None)
    a, b = (CausalVideoAutoencoder.from_pretrained(tmp_path / k / "vae") for k in "ab")
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_decoder_only_fine_tune_keeps_the_latent_space(dataset, tmp_path):
    base = vae_preset("tiny", datasets=(str(dataset),), vae="tiny_patch", iterations=3, frames=5)
    train_vae(base, tmp_path / "base", log=lambda *_: None)
    with pytest.raises(ValueError, match="--init"):
        train_vae(vae_preset("small_decoder", datasets=(str(dataset),)), tmp_path / "x", log=lambda *_: None)
    tune = vae_preset("small_decoder", datasets=(str(dataset),), init=str(tmp_path / "base" / "vae"), iterations=3,
                      frames=5, resolution=32, batch_size=2, warmup=1)
    train_vae(tune, tmp_path / "tune", log=lambda *_: None)
    a, b = (CausalVideoAutoencoder.from_pretrained(tmp_path / k / "vae") for k in ("base", "tune"))
    assert b.scaling_factor == a.scaling_factor
    encoder = [k for k in a.state_dict() if k.startswith("encoder.")]
    assert encoder and all(torch.equal(b.state_dict()[k], a.state_dict()[k]) for k in encoder)
    assert any(not torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items() if k.startswith("decoder."))


def test_noise_schedule_travels_with_the_weights(dataset, tmp_path, capsys):
    """A run's SNR shift is stored in the MMVDM's config (samplers rebuild the schedule from it), and a
    fine-tune with another schedule is refused before anything is written."""
    train(preset("tiny", datasets=(str(dataset),), snr_shift_scale=1.0), tmp_path / "s1", log=lambda *_: None)
    model = MMVDM.from_pretrained(tmp_path / "s1" / "ema")
    assert model.config.snr_shift_scale == 1.0
    ours = Diffusion.for_model(model).alphas_cumprod
    assert torch.equal(ours, Diffusion(DiffusionConfig(snr_shift_scale=1.0)).alphas_cumprod)
    assert (ours[1:-1] > Diffusion().alphas_cumprod[1:-1]).all()   # less noise than CogVideoX's shift of 3
    argv = ["train", "--preset", "tiny", "--data", str(dataset), "--init", str(tmp_path / "s1" / "ema"), "--out"]
    assert main(argv + [str(tmp_path / "ft")]) == 2
    assert "snr_shift_scale 1.0" in capsys.readouterr().err and not (tmp_path / "ft").exists()


def test_checkpoints_of_an_older_version_still_match():
    """A field added to the config after a run was checkpointed matches while it keeps its default."""

    from morph4d.training.train import config_text, same_config
    cfg = vae_preset("tiny", datasets=("d",))
    older = json.loads(config_text(cfg))
    del older["latent_noise"]
    older = json.dumps(older, sort_keys=True)
    assert same_config(config_text(cfg), cfg) and same_config(older, cfg)
    assert not same_config(older, replace(cfg, latent_noise=0.1))
    assert not same_config(config_text(cfg), replace(cfg, lr=1.0)) and not same_config(None, cfg)


def test_cli_errors_before_any_work(dataset, full_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    held_out = tmp_path / "held_out"   # a dataset of the evaluation identities
    held_out.mkdir()
    info = json.loads((dataset / "dataset.json").read_text())
    info["synth"]["split"] = "eval"
    (held_out / "dataset.json").write_text(json.dumps(info))
    cases = [
        (["train", "--preset", "tiny", "--data", str(held_out), "--out", str(tmp_path / "a")], "never trained on"),
        (["train-vae", "--preset", "tiny", "--data", str(held_out), "--out", str(tmp_path / "a")], "never trained on"),
        (["train", "--preset", "tiny", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a")], "no such"),
        (["train", "--preset", "tiny", "--data", str(empty), "--out", str(tmp_path / "b")], "dataset.json"),
        (["train-vae", "--preset", "tiny", "--data", str(empty), "--out", str(tmp_path / "c")], "dataset.json"),
        (["train", "--preset", "paper", "--data", str(dataset), "--out", str(tmp_path / "d")], "--vae"),
        (["train", "--preset", "paper", "--data", str(dataset), "--vae", str(full_run / "ema"), "--out",
          str(tmp_path / "d")], "fits no dataset"),
        (["train", "--preset", "tiny", "--data", str(dataset), "--weights", "1", "2", "--out", str(tmp_path / "e")],
         "weight"),
        (["train", "--preset", "tiny", "--data", str(dataset), "--weights", "2", "--out", str(full_run)],
         "another training config"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err
    assert not any((tmp_path / n).exists() for n in "abcde")
    assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "f"),
                 "--max-steps", "1"]) == 0
    assert [r["step"] for r in rows(tmp_path / "f" / "log.csv")] == ["1"]


def test_gradient_checkpointing_gives_the_same_gradients(dataset):
    data = TrainData([dataset], (), [(2, 5, 32)])
    stage = Stage(1, 1e-3, ((2, 5, 32),), p_given_views=0.5)
    _, batch = data.batch(stage, 2, 0, torch.Generator().manual_seed(0))
    vae, diffusion, grads = load_vae(preset("tiny"), "cpu"), Diffusion(), []
    for checkpointing in (False, True):
        model = MMVDM(MMVDMConfig.preset("tiny"), generator=torch.Generator().manual_seed(0))
        model.gradient_checkpointing = checkpointing
        loss, _ = training_step(model, vae, diffusion, batch, stage, 0.1, torch.Generator().manual_seed(3), "cpu")
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_trains_the_same_function(dataset, tmp_path):
    """precision="bf16" runs the MMVDM's forward in bfloat16 (the loss differs from float32's in its low bits)
    with gradients that point the same way; an unknown precision is refused by both configs."""
    data = TrainData([dataset], (), [(2, 5, 32)])
    stage = Stage(1, 1e-3, ((2, 5, 32),), p_given_views=0.5)
    _, batch = data.batch(stage, 2, 0, torch.Generator().manual_seed(0))
    vae, diffusion, losses, grads = load_vae(preset("tiny"), "cpu"), Diffusion(), [], []
    for precision in ("fp32", "bf16"):
        model = MMVDM(MMVDMConfig.preset("tiny"), generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():   # away from adaLN-Zero's start, where the output is 0 at any precision
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        loss, _ = training_step(model, vae, diffusion, batch, stage, 0.1, torch.Generator().manual_seed(3), "cpu",
                                precision)
        loss.backward()
        assert loss.dtype == torch.float32
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], rel=2e-2)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
    with pytest.raises(ValueError, match="precision"):
        preset("tiny", precision="fp16")
    for command, run_dir in (("train", "m"), ("train-vae", "v")):   # the CLI's --precision reaches the run config
        assert main([command, "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / run_dir),
                     "--max-steps", "1", "--precision", "bf16"]) == 0
        assert json.loads((tmp_path / run_dir / "config.json").read_text())["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        vae_preset("tiny", precision="half")


def test_bf16_autoencoder_training_resumes_exactly(dataset, tmp_path):
    cfg = vae_preset("tiny", datasets=(str(dataset),), vae="tiny_patch", iterations=4, frames=5, checkpoint_every=2,
                     precision="bf16")
    train_vae(cfg, tmp_path / "a", log=lambda *_: None)
    train_vae(cfg, tmp_path / "b", stop_after=2, log=lambda *_: None)
    train_vae(cfg, tmp_path / "b", log=lambda *_: None)
    a, b = (CausalVideoAutoencoder.from_pretrained(tmp_path / k / "vae") for k in "ab")
    assert all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items())
    train_vae(replace(cfg, precision="fp32"), tmp_path / "c", log=lambda *_: None)
    l1 = {k: float(next(csv.DictReader((tmp_path / k / "log.csv").open()))["l1"]) for k in "ac"}
    assert l1["a"] != l1["c"] and l1["a"] == pytest.approx(l1["c"], rel=2e-2)
