"""`morph4d train-mpi` (morph4d.portrait.train): both stages and both losses run on a tiny synthetic dataset, a
stopped run resumes to the same weights, and bad input is refused before anything is written."""

import csv

import pytest
import torch

from morph4d.cli import main
from morph4d.models.portrait_unet import PortraitUNet
from morph4d.portrait.train import CHECKPOINT, train_portrait, train_preset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from morph4d.data.synth import SynthConfig, synthesize
    root = tmp_path_factory.mktemp("portrait_data") / "ds"
    synthesize(SynthConfig(out=str(root), identities=1, views=4, frames=7, resolution=32, progress=False),
               log=lambda *_: None)
    return root


def rows(run):
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_stopped_run_resumes_to_the_same_weights_and_both_losses_train(dataset, tmp_path):
    cfg = train_preset("tiny", data=(str(dataset),), views=4, bootstrap_steps=2, geometry_steps=6,
                       max_side_deg=180.0)
    whole = train_portrait(cfg, tmp_path / "whole", log=lambda *a: None)
    part = train_portrait(cfg, tmp_path / "part", stop_after=3, log=lambda *a: None)
    assert not (part / "unet").exists() and len(rows(part)) == 3
    train_portrait(cfg, tmp_path / "part", log=lambda *a: None)                       # resumed at step 3
    a, b = (PortraitUNet.from_pretrained(r / "unet").state_dict() for r in (whole, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = rows(whole)
    assert [r["stage"] for r in log] == ["bootstrap"] * 2 + ["geometry"] * 6
    assert {r["loss_kind"] for r in log[2:]} == {"mpi", "side"} and {r["loss_kind"] for r in log[:2]} == {"mpi"}
    assert all(float(r["total"]) > 0 for r in log)


def test_train_mpi_cli_and_refusals(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-mpi", "--data", str(dataset), "--out", str(out), "--preset", "tiny"]) == 0
    assert (out / "unet" / "model.safetensors").is_file() and (out / CHECKPOINT).is_file()
    assert main(["train-mpi", "--data", str(dataset), "--out", str(out), "--preset", "tiny", "--seed", "3"]) == 2
    assert "another train-mpi config" in capsys.readouterr().err
    for argv in (["--data", str(dataset), "--preset", "huge"], ["--preset", "tiny"]):   # unknown preset; no --data
        assert main(["train-mpi", "--out", str(tmp_path / "bad"), *argv]) == 2
        assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "bad").exists()
