"""Fitting bound Gaussians to a synthetic multi-view sequence: it learns, and a stopped fit resumes exactly."""

import pytest
import torch
from safetensors.torch import load_file

from morph4d.data.synth import SynthConfig, synthesize
from morph4d.fit import FitConfig, evaluate, fit_sequence


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitdata")
    names = synthesize(SynthConfig(out=str(root / "ds"), identities=1, views=4, frames=2, resolution=32,
                                   progress=False), log=lambda *_: None)
    return root / "ds" / names[0]


CFG = FitConfig(iterations=40, checkpoint_every=10, log_every=40)


def test_fit_learns_the_sequence(sequence, tmp_path):
    first = fit_sequence(sequence, tmp_path / "a", FitConfig(iterations=1, log_every=1), log=lambda *_: None)
    fit_sequence(sequence, tmp_path / "b", CFG, log=lambda *_: None)
    assert (tmp_path / "b" / "avatar.safetensors").is_file()
    assert evaluate(sequence, tmp_path / "b") > first["psnr"] + 3  # > 3 dB better than the initial avatar


def test_stopped_fit_resumes_to_the_same_avatar(sequence, tmp_path):
    fit_sequence(sequence, tmp_path / "full", CFG, log=lambda *_: None)
    fit_sequence(sequence, tmp_path / "resumed", CFG, log=lambda *_: None, stop_after=20)
    assert not (tmp_path / "resumed" / "avatar.safetensors").exists()
    fit_sequence(sequence, tmp_path / "resumed", CFG, log=lambda *_: None)
    a, b = load_file(str(tmp_path / "full" / "avatar.safetensors")), load_file(str(tmp_path / "resumed" / "avatar.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another sequence or configuration"):
        fit_sequence(sequence, tmp_path / "full", FitConfig(iterations=41), log=lambda *_: None)


def test_fit_command(sequence, tmp_path, capsys):
    from morph4d.cli import main
    assert main(["fit", str(sequence), "--out", str(tmp_path / "cli"), "--iterations", "3"]) == 0
    assert "PSNR" in capsys.readouterr().out and (tmp_path / "cli" / "avatar.safetensors").is_file()
    assert main(["fit", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_fit_reads_generated_videos(tmp_path, sequence):
    """`morph4d generate` output (manifest + PNG frames) is a fit input: generate -> fit runs end to end."""
    from morph4d.cli import main
    from morph4d.fit import load_fit_data
    from morph4d.reference import reference_from_sequence
    reference_from_sequence(sequence, 0, 0, 32).save(tmp_path / "ref.npz")
    assert main(["model", "init", "--out", str(tmp_path / "m"), "--mmvdm", "tiny", "--vae", "tiny"]) == 0
    assert main(["generate", "--reference", str(tmp_path / "ref.npz"), "--model", str(tmp_path / "m"),
                 "--key-steps", "1", "--other-steps", "1", "--out", str(tmp_path / "gen")]) == 0
    data = load_fit_data(tmp_path / "gen")
    assert data.images.shape == (8, 25, 3, 32, 32) and data.params.jaw.shape == (25, 3)
    fit_sequence(tmp_path / "gen", tmp_path / "avatar", FitConfig(iterations=2), log=lambda *_: None)
    assert (tmp_path / "avatar" / "avatar.safetensors").is_file()
    (tmp_path / "gen" / "views" / "03" / "0007.png").unlink()
    with pytest.raises(ValueError, match="missing"):
        load_fit_data(tmp_path / "gen")
