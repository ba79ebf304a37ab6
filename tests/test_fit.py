"""Fitting a 4D avatar to a synthetic multi-view sequence: it learns, the U-Net deformation, back-face culling
and density control run inside the loop, a stopped fit resumes exactly, and the avatar file round-trips."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from morph4d.avatar.fit import FitConfig, evaluate, fit_sequence, load_fit_data
from morph4d.avatar.gaussians.deform import DeformationUNetConfig
from morph4d.avatar.gaussians.densify import DensifyConfig
from morph4d.avatar.gaussians.losses import never_facing
from morph4d.avatar.model import load_avatar
from morph4d.data.synth import SynthConfig, synthesize
from morph4d.heads import load_head_model

QUIET = dict(log=lambda *_: None)
TINY_DEFORM = DeformationUNetConfig(size=16, base_channels=8, max_channels=16, depth=2, out_channels=6)
# every part on, at test size, with SH degree 3 (the full colour path; the default is 1); densification forced
# (threshold 0) within a budget
CFG = FitConfig(iterations=30, checkpoint_every=10, log_every=30, sh_degree=3, deformation=TINY_DEFORM, offmesh=None,
                densify=DensifyConfig(every=10, start=10, stop=25, grad_threshold=0.0, max_gaussians=60_000))


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitdata")
    names = synthesize(SynthConfig(out=str(root / "ds"), identities=1, views=4, frames=2, resolution=32,
                                   progress=False), log=lambda *_: None)
    return root / "ds" / names[0]


@pytest.fixture(scope="module")
def fitted(sequence, tmp_path_factory):
    out = tmp_path_factory.mktemp("fitted") / "avatar"
    fit_sequence(sequence, out, CFG, **QUIET)
    return out


def test_fit_learns_the_sequence(sequence, fitted, tmp_path):
    first = fit_sequence(sequence, tmp_path / "a", FitConfig(iterations=1, log_every=1, deformation=TINY_DEFORM,
                                                             offmesh=None), **QUIET)
    assert evaluate(sequence, fitted) > first["psnr"] + 3  # > 3 dB better than the initial avatar


def test_backfaces_culled_and_one_gaussian_per_triangle_kept(sequence, fitted):
    data = load_fit_data(sequence)
    head = load_head_model("builtin")
    facing = (~never_facing(head(data.params).detach(), head.faces, data.cameras)).nonzero()[:, 0]
    assert 0 < len(facing) < head.faces.shape[0]  # the 4 frontal cameras never see the back of the head
    binding = load_avatar(fitted).gaussians.binding
    assert set(binding.tolist()) == set(facing.tolist())  # culled triangles have none, the others >= 1
    assert len(binding) > len(facing)  # densification added Gaussians


def test_stopped_fit_resumes_to_the_same_avatar(sequence, fitted, tmp_path):
    fit_sequence(sequence, tmp_path / "resumed", CFG, stop_after=15, **QUIET)  # stops between two densifications
    assert not (tmp_path / "resumed" / "avatar.safetensors").exists()
    fit_sequence(sequence, tmp_path / "resumed", CFG, **QUIET)
    a, b = load_file(str(fitted / "avatar.safetensors")), load_file(str(tmp_path / "resumed" / "avatar.safetensors"))
    assert any(k.startswith("deform.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another sequence or configuration"):
        fit_sequence(sequence, fitted, FitConfig(iterations=41), **QUIET)


def test_avatar_applies_the_fitted_deformation_only_to_fitted_frames(sequence, fitted, tmp_path):
    avatar = load_avatar(fitted)
    assert avatar.num_frames == 2 and avatar.deformation is not None and avatar.fitted_params is not None
    v = avatar.vertices(load_fit_data(sequence).params)
    with torch.no_grad():
        a, b, none = avatar.world(v[0], 0), avatar.world(v[0], 1), avatar.world(v[0])
        assert not torch.allclose(a.means, none.means) and not torch.allclose(a.means, b.means)
        assert torch.equal(none.means, avatar.gaussians.to_world(v[0], avatar.head.faces).means)
    with pytest.raises(ValueError, match="outside the fitted sequence"):
        avatar.world(v[0], 2)
    # another format version is refused
    tensors = load_file(str(fitted / "avatar.safetensors"))
    (tmp_path / "old").mkdir()
    save_file(tensors, str(tmp_path / "old" / "avatar.safetensors"), metadata={"format_version": "1"})
    with pytest.raises(ValueError, match="format version 1"):
        load_avatar(tmp_path / "old")


def test_held_out_frames_are_never_seen(sequence, tmp_path):
    """FitConfig.train_frames (issue 17 §4: avatars scored at frames they were not fitted to): a fit on frame 0
    of a copy whose frame-1 images are noise gives the same avatar as on the original; frames outside the
    sequence are refused."""
    import shutil

    import numpy as np
    from PIL import Image
    noisy = tmp_path / "noisy"
    shutil.copytree(sequence, noisy)
    for png in noisy.glob("images/*/000001.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png)
    cfg = FitConfig(iterations=6, checkpoint_every=100, log_every=100, deformation=TINY_DEFORM, train_frames=(0,))
    fit_sequence(sequence, tmp_path / "a", cfg, **QUIET)
    fit_sequence(noisy, tmp_path / "b", cfg, **QUIET)
    a, b = load_file(str(tmp_path / "a" / "avatar.safetensors")), load_file(str(tmp_path / "b" / "avatar.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = replace(cfg, train_frames=(1,))              # the control: fitting frame 1 sees the noise
    fit_sequence(sequence, tmp_path / "c", other, **QUIET)
    fit_sequence(noisy, tmp_path / "d", other, **QUIET)
    c, d = load_file(str(tmp_path / "c" / "avatar.safetensors")), load_file(str(tmp_path / "d" / "avatar.safetensors"))
    assert c.keys() != d.keys() or any(not torch.equal(c[k], d[k]) for k in c)
    with pytest.raises(ValueError, match="train_frames must index the sequence's 2 frames"):
        fit_sequence(sequence, tmp_path / "e", FitConfig(iterations=1, train_frames=(2,)), **QUIET)


def test_render_command(fitted, tmp_path, capsys):
    from morph4d.cli import main
    from morph4d.heads.animation import builtin_animation
    from morph4d.video import read_mp4
    video = tmp_path / "v.mp4"
    assert main(["render", str(fitted), "--out", str(video), "--animation", "surprise", "--frames", "3",
                 "--res", "32", "--orbit"]) == 0
    assert read_mp4(video).shape[:3] == (3, 32, 32)
    before = video.read_bytes()
    anim = builtin_animation("talk", load_head_model("builtin"), 3)
    anim.head_model = "flame"
    anim.save(tmp_path / "flame.npz")
    tensors = load_file(str(fitted / "avatar.safetensors"))
    (tmp_path / "old").mkdir()
    save_file(tensors, str(tmp_path / "old" / "avatar.safetensors"), metadata={"format_version": "1"})
    capsys.readouterr()
    for argv in (["render", str(tmp_path / "none"), "--out", str(video)],
                 ["render", str(tmp_path / "old"), "--out", str(video)],
                 ["render", str(fitted), "--out", str(video), "--animation", str(tmp_path / "flame.npz")]):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no fitted avatar" in err and "version" in err and "flame" in err
    assert video.read_bytes() == before  # nothing overwritten


def test_fit_command(sequence, tmp_path, capsys):
    from morph4d.cli import main
    assert main(["fit", str(sequence), "--out", str(tmp_path / "cli"), "--iterations", "3"]) == 0
    assert "PSNR" in capsys.readouterr().out and (tmp_path / "cli" / "avatar.safetensors").is_file()
    assert main(["fit", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["fit", str(sequence), "--out", str(tmp_path / "y"), "--reference-share", "-0.1"]) == 2
    assert "reference share" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_fit_reads_generated_videos(tmp_path, sequence):
    """`morph4d generate` output (manifest + PNG frames) is a fit input: generate -> fit runs end to end."""
    from morph4d.cli import main
    from morph4d.generation.reference import reference_from_sequence
    reference_from_sequence(sequence, 0, 0, 32).save(tmp_path / "ref.npz")
    assert main(["model", "init", "--out", str(tmp_path / "m"), "--mmvdm", "tiny", "--vae", "tiny"]) == 0
    assert main(["generate", "--reference", str(tmp_path / "ref.npz"), "--model", str(tmp_path / "m"),
                 "--key-steps", "1", "--other-steps", "1", "--out", str(tmp_path / "gen")]) == 0
    data = load_fit_data(tmp_path / "gen")
    assert data.images.shape == (8, 25, 3, 32, 32) and data.params.jaw.shape == (25, 3)
    fit_sequence(tmp_path / "gen", tmp_path / "avatar", FitConfig(iterations=2, deformation=TINY_DEFORM), **QUIET)
    assert (tmp_path / "avatar" / "avatar.safetensors").is_file()
    (tmp_path / "gen" / "views" / "03" / "0007.png").unlink()
    with pytest.raises(ValueError, match="missing"):
        load_fit_data(tmp_path / "gen")


def _generated_copy(sequence, out, train_views, reference_noise: bool = False):
    """The sequence written as a generated-videos folder with view 0 / frame 0 as its reference image (top half
    outside the photo; ``reference_noise``: noise there)."""
    from morph4d.data.format import read_sequence, select_frames
    from morph4d.generation.reference import Reference
    from morph4d.generation.videos import write_videos
    seq = read_sequence(sequence)
    rgb, _ = seq.read_images(range(seq.num_views), range(seq.num_frames))            # (V, F, H, W, 3)
    image = rgb[0, 0].permute(2, 0, 1).clone()
    outcrop = torch.zeros(32, 32)
    outcrop[:16] = 1
    if reference_noise:
        image[:, :16] = torch.rand(3, 16, 32, generator=torch.Generator().manual_seed(1))
    ref = Reference(image, select_frames(seq.params, 0), seq.cameras[[0]], "builtin", outcrop)
    n = len(seq.cameras)
    write_videos(out, [rgb[v] for v in train_views], seq.cameras[list(train_views)], torch.zeros(n), torch.zeros(n),
                 torch.ones(n, dtype=torch.bool), seq.params, "builtin", 25.0, {}, reference=ref)
    return ref


def test_the_reference_image_joins_a_generated_fit(sequence, tmp_path):
    """Issue 17: a generated folder carries its reference (image, outcrop, camera, head parameters); the fit draws
    it in ``reference_share`` of the iterations: fitted without view 0, the avatar renders view 0 / frame 0 (the
    reference) better with it than without; the reference's pixels outside the photo are never compared."""
    from morph4d.generation.videos import MANIFEST, read_videos
    ref = _generated_copy(sequence, tmp_path / "gen", (1, 2, 3))
    back = read_videos(tmp_path / "gen").reference
    assert (back.image - ref.image).abs().max() <= 0.5 / 255 + 1e-6 and torch.equal(back.outcrop, ref.outcrop)
    assert torch.allclose(back.camera.K, ref.camera.K) and torch.allclose(back.params.jaw, ref.params.jaw)
    assert load_fit_data(tmp_path / "gen").reference.frame == 0
    cfg = FitConfig(iterations=40, checkpoint_every=100, log_every=100, deformation=TINY_DEFORM, offmesh=None,
                    reference_share=0.5)
    lines = []
    fit_sequence(tmp_path / "gen", tmp_path / "with", cfg, log=lines.append)
    fit_sequence(tmp_path / "gen", tmp_path / "without", replace(cfg, reference_share=0.0), **QUIET)
    assert any("reference image joins the fit" in line for line in lines)
    at_ref = {k: evaluate(sequence, tmp_path / k, views=[0], frames=[0]) for k in ("with", "without")}
    assert at_ref["with"] > at_ref["without"] + 1, at_ref
    # noise outside the photo: the same avatar, bit for bit
    _generated_copy(sequence, tmp_path / "noisy", (1, 2, 3), reference_noise=True)
    fit_sequence(tmp_path / "noisy", tmp_path / "with_noise", cfg, **QUIET)
    a, b = (load_file(str(tmp_path / k / "avatar.safetensors")) for k in ("with", "with_noise"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a manifest whose reference is broken is refused, naming it
    m = json.loads((tmp_path / "gen" / MANIFEST).read_text())
    m["reference"]["R"] = [[2, 0, 0], [0, 1, 0], [0, 0, 1]]
    (tmp_path / "gen" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="reference"):
        load_fit_data(tmp_path / "gen")
    (tmp_path / "gen" / "reference.png").unlink()
    del m["reference"]["R"]
    (tmp_path / "gen" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="reference is incomplete"):
        load_fit_data(tmp_path / "gen")
