"""`morph4d train-mpi` (morph4d.portrait.train): both stages and both losses run on a tiny synthetic dataset, a
stopped run resumes to the same weights, and bad input is refused before anything is written."""

import csv
import json

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
    # packed as an embedded default is: bfloat16 storage, float32 on load, the run's config in provenance.json
    assert main(["model", "pack-portrait", str(out / "unet"), "--out", str(tmp_path / "packed"), "--note", "t"]) == 0
    raw, packed = (PortraitUNet.from_pretrained(d).state_dict() for d in (out / "unet", tmp_path / "packed"))
    assert all(packed[k].dtype == torch.float32 and torch.equal(packed[k], raw[k].bfloat16().float()) for k in raw)
    prov = json.loads((tmp_path / "packed" / "provenance.json").read_text())
    assert prov["note"] == "t" and prov["training_config"]["train"]["unet"] == "tiny"
    assert main(["model", "pack-portrait", str(tmp_path / "nothing"), "--out", str(tmp_path / "p2")]) == 2
    assert "no such weights folder" in capsys.readouterr().err and not (tmp_path / "p2").exists()
    assert main(["train-mpi", "--data", str(dataset), "--out", str(out), "--preset", "tiny", "--seed", "3"]) == 2
    assert "another train-mpi config" in capsys.readouterr().err
    for argv in (["--data", str(dataset), "--preset", "huge"], ["--preset", "tiny"]):   # unknown preset; no --data
        assert main(["train-mpi", "--out", str(tmp_path / "bad"), *argv]) == 2
        assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "bad").exists()


def test_windows_can_pair_the_first_view_with_a_near_one(dataset):
    """``WindowConfig.near_view_deg`` (what L_side needs): the second view is within the angle of the first."""
    from morph4d.data.loader import MultiViewWindows, WindowConfig
    ds = MultiViewWindows(dataset, WindowConfig(views=3, frames=5, resolution=32, conditioning=False,
                                                near_view_deg=60.0))
    s = ds.sequences[0]
    c = s.cameras.centers / s.cameras.centers.norm(dim=-1, keepdim=True)
    angles = torch.rad2deg(torch.acos((c @ c.T).clamp(-1, 1)))
    assert (angles[~torch.eye(len(c), dtype=torch.bool)] <= 60).any()          # the rig has near pairs
    paired = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        views, _, _ = ds.sample_window(0)
        others = [v for v in range(len(c)) if v != views[0]]
        assert len(set(views)) == 3
        if any(float(angles[views[0], v]) <= 60 for v in others):     # a near view exists: it is the second
            assert float(angles[views[0], views[1]]) <= 60 + 1e-4
            paired += 1
    assert paired > 0
    with pytest.raises(ValueError, match="near_view_deg"):
        WindowConfig(near_view_deg=0.0)


def _side_batch(cfg):
    from morph4d.portrait.train import Batches
    batches = Batches(cfg, 32, 4, 1000)
    for step in range(40):
        batch = batches(step, "geometry")
        if batch["kind"] == "side":
            return batches, batch
    raise AssertionError("no L_side step in 40 draws")


def test_side_steps_see_the_pseudo_ground_truth_at_large_noise_only(dataset):
    """The paper's alternating training: L_side's input is the reference projected through the head mesh (not the
    exact side view), at timesteps >= pseudo_min_noise * T; without pseudo_gt, the exact view at any level."""
    cfg = train_preset("tiny", data=(str(dataset),), views=4, max_side_deg=180.0)
    batches, batch = _side_batch(cfg)
    assert batch["t_min"] == 600
    video, uv = batch["frames"][:, :, :3], batch["frames"][:, :, 7:10]
    off_head = (uv == -1).all(2, keepdim=True).expand_as(video)
    assert off_head.any() and (video[off_head] == 1).all()            # the projection's background: white
    # the network's reference-projection channels (ours) are the same projection, in the same camera
    assert torch.equal(batch["frames"][:, :, 10:13], video)
    conf = batch["frames"][:, :, 13:]
    assert conf.max() > 0.5 and (conf[off_head[:, :, :1]] == 0).all() and conf.min() >= 0
    exact_batches, exact = _side_batch(train_preset("tiny", data=(str(dataset),), views=4, max_side_deg=180.0,
                                                    pseudo_gt=False))
    assert exact["t_min"] == 0 and not torch.equal(exact["frames"][:, :, :3], video)
    assert torch.equal(exact["frames"][:, :, 10:], batch["frames"][:, :, 10:])   # conditioning: the same either way
    assert torch.equal(exact["target"], batch["target"])               # same draw, other input
    on = batch["disparity"] > 0                                        # the head model's disparity: 1 / z
    assert on.any() and ((1 / batch["disparity"][on] - 1.0).abs() < 1.0).all()


def test_an_lpips_file_adds_its_term_and_a_wrong_one_is_refused(dataset, tmp_path, capsys):
    class MeanAbs(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().mean(dim=(1, 2, 3))

    torch.jit.save(torch.jit.script(MeanAbs()), str(tmp_path / "lpips.pt"))
    (tmp_path / "text.pt").write_text("not a network")
    out = tmp_path / "run"
    base = ["train-mpi", "--data", str(dataset), "--preset", "tiny"]
    assert main([*base, "--out", str(tmp_path / "bad"), "--lpips", str(tmp_path / "text.pt")]) == 2
    assert "not a TorchScript file" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main([*base, "--out", str(out), "--lpips", str(tmp_path / "lpips.pt")]) == 0
    log = rows(out)
    assert all(float(r["lpips"]) > 0 and float(r["disparity"]) >= 0 for r in log)
