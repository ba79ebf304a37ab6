"""`morph4d generate` with tiny real models: outputs, determinism, given latents, guidance equivalences,
resumption and 2 processes, bad input."""

import json

import pytest
import torch

from morph4d.cameras import orbit_cameras
from morph4d.cli import main
from morph4d.conditioning.projection import PROJECTION_VERSION
from morph4d.diffusion.sampling import guidance, model_denoiser
from morph4d.diffusion.schedule import Diffusion
from morph4d.generation.generate import GenerateConfig, run_generate
from morph4d.generation.plan import PlanRun
from morph4d.generation.reference import Reference
from morph4d.heads.animation import builtin_animation
from morph4d.heads.builtin import load_builtin_head, vertex_colors
from morph4d.mesh.shade import shade_mesh
from morph4d.models.folder import init_models, load_models
from morph4d.models.mmvdm import MMVDM, MMVDMConfig

RES = 32
FAST = GenerateConfig(preset="small", key_steps=3, other_steps=2)


@pytest.fixture(scope="module")
def head():
    return load_builtin_head()


@pytest.fixture(scope="module")
def models(tmp_path_factory, head):
    root = init_models(tmp_path_factory.mktemp("models"), "tiny", "tiny", seed=0)
    return root, *load_models(root)


def make_reference(head, res=RES):
    cam = orbit_cameras(torch.tensor([5.0]), torch.tensor([0.0]), 0.75, 26.0, res, res, target=(0, -0.01, 0))
    p = head.zero_params()
    image, _ = shade_mesh(head(p), head.faces, vertex_colors(head), cam)
    return Reference(image[0].permute(2, 0, 1), p, cam, "builtin")


def generate(out, models, head, cfg=FAST, **kw):
    root, model, vae = models
    anim = builtin_animation("talk", head, 25)
    return run_generate(out, model, vae, head, make_reference(head), anim, cfg, {"test": 1}, log=lambda *_: None, **kw)


def test_generate_writes_views_grid_and_manifest(tmp_path, models, head):
    paths = generate(tmp_path / "g", models, head)
    m = json.loads(open(paths["manifest"]).read())
    assert m["frames"] == 25 and len(m["views"]) == 8 and sum(v["key"] for v in m["views"]) == 4
    assert len(list((tmp_path / "g" / "views" / "05").glob("*.png"))) == 25
    assert (tmp_path / "g" / "grid.mp4").is_file() and len(m["params"]["jaw"]) == 25
    # the reference it was generated from, in the views' (canonical) world, for the avatar fit (issue 17)
    from morph4d.generation.reference import canonicalize
    from morph4d.generation.videos import read_videos
    ref, back = canonicalize(make_reference(head), head), read_videos(tmp_path / "g").reference
    assert (back.image - ref.image).abs().max() <= 0.5 / 255 + 1e-6 and back.outcrop is None
    assert torch.allclose(back.camera.R, ref.camera.R) and torch.allclose(back.camera.t, ref.camera.t, atol=1e-6)
    # same seed, same output; the cluster job's given key videos are the key job's latents bit for bit
    generate(tmp_path / "g2", models, head)
    a, b = PlanRun(tmp_path / "g", *_plan_args()), PlanRun(tmp_path / "g2", *_plan_args())
    for j in a.jobs:
        assert torch.equal(a.load(j.id), b.load(j.id))
    c = a.by_id["cluster0_w0"]
    for v in c.given_views:
        assert torch.equal(a.load("cluster0_w0")[c.views.index(v)], a.load("key_w0")[a.by_id["key_w0"].views.index(v)])


def _plan_args():
    from dataclasses import asdict

    from morph4d.generation.plan import PRESETS, PlanConfig
    cfg = PlanConfig(**{**asdict(PRESETS["small"]), "key_steps": 3, "other_steps": 2})
    return cfg, {"test": 1, "guidance": "multiview", "radius": 0.75, "fov": 26.0, "anchor": True, "anchor_power": 2,
                 "projection": PROJECTION_VERSION}


def test_a_run_of_another_projection_version_is_refused(tmp_path, models, head, monkeypatch):
    """A generation folder sampled with another make of the projection (PROJECTION_VERSION: the mirror fill came in
    2) is refused, not resumed with its stale latents."""
    import morph4d.generation.generate as G
    generate(tmp_path / "g", models, head)
    monkeypatch.setattr(G, "PROJECTION_VERSION", 1)
    with pytest.raises(ValueError, match="different run"):
        generate(tmp_path / "g", models, head)


def test_anchored_sampling_keeps_what_the_reference_saw(tmp_path, models, head, capsys):
    """Issue 17 (ours): by default every job is anchored to the encoded reference projection, so where the
    projection is confident the sampled latents are the projection's (an untrained model's own would be far from
    them), and the decoded views get the projection blended in by its confidence; --no-anchor is MVP4D's sampler,
    another run (its folder is refused for the anchored one)."""
    from morph4d.cameras import view_set
    from morph4d.conditioning.projection import projection_conditioning, projection_options
    from morph4d.generation.generate import ANCHOR_POWER, MultiViewGenerator
    root, model, vae = models
    generate(tmp_path / "a", models, head)
    generate(tmp_path / "b", models, head, GenerateConfig(**{**FAST.__dict__, "anchor": False}))
    cfg, identity = _plan_args()
    a = PlanRun(tmp_path / "a", cfg, identity)
    b = PlanRun(tmp_path / "b", cfg, {**identity, "anchor": False, "anchor_power": None})
    job = a.by_id["key_w0"]
    vs = view_set("small")
    cams = vs.cameras(0.75, 26.0, RES, RES)
    gen = MultiViewGenerator(model, vae, head, make_reference(head), builtin_animation("talk", head, 25), cams,
                             (vs.azimuth, vs.elevation), cfg.frames_per_window)
    with torch.no_grad():
        video, conf = projection_conditioning(gen.ref_verts, head(gen.window_params(0)), head.faces, gen.ref.camera,
                                              gen.ref.image, cams[job.views], **projection_options(head))
        projected = vae.encode(video[None])[0]
    assert conf.max() > 0.3
    weight = conf ** ANCHOR_POWER                              # the anchor's weight per latent pixel
    sure = (weight >= 0.7 * weight.max()).expand_as(projected)  # the latent pixels the anchor holds firmest
    err_a = (a.load(job.id) - projected)[sure].abs().mean()
    err_b = (b.load(job.id) - projected)[sure].abs().mean()
    assert err_a < 0.5 * err_b                              # anchored: much closer to the projection
    # and in pixel space: the anchored run's views are its decoded latents with the projection blended in by its
    # confidence and matted to its geometry (MultiViewGenerator.composite), the unanchored run's its decoded latents
    # as they are
    from morph4d.generation.videos import read_videos
    written_a, written_b = read_videos(tmp_path / "a").images, read_videos(tmp_path / "b").images
    for v in (0, 5):
        decoded_a, decoded_b = (r.frames_of(gen.decode, v).clamp(0, 1) for r in (a, b))
        off = (written_a[v] - gen.composite(decoded_a, v)).abs()     # a silhouette pixel or two may differ by 2/255
        assert off.max() < 0.02 and (off > 0.5 / 255 + 1e-5).float().mean() < 1e-3
        assert (written_b[v] - decoded_b).abs().max() <= 0.5 / 255 + 1e-5
        assert (gen.composite(decoded_a, v) - decoded_a).abs().max() > 0.1     # the blend changes the views
        # and the background far from the projection's geometry (the image's corners) is written white
        corners = gen.composite(decoded_a, v)[..., ::decoded_a.shape[-2] - 1, ::decoded_a.shape[-1] - 1]
        assert bool((corners == 1).all()) and bool((decoded_a[..., 0, 0] < 1).any())
    path = str(tmp_path / "ref.npz")
    make_reference(head).save(path)
    argv = ["generate", "--reference", path, "--model", str(root), "--key-steps", "3", "--other-steps", "2"]
    assert main(argv + ["--out", str(tmp_path / "c")]) == 0
    assert main(argv + ["--out", str(tmp_path / "c"), "--no-anchor"]) == 2
    assert "different run" in capsys.readouterr().err


def test_sampling_uses_the_schedule_of_the_weights(tmp_path, models, head):
    """A model trained with another SNR shift (its config.json says so) is sampled with that schedule."""
    root = init_models(tmp_path / "m", "tiny", "tiny", seed=0)
    config = json.loads((root / "mmvdm" / "config.json").read_text())
    (root / "mmvdm" / "config.json").write_text(json.dumps({**config, "snr_shift_scale": 1.0}))
    shifted = load_models(root)
    assert shifted[0].config.snr_shift_scale == 1.0
    generate(tmp_path / "a", models, head)
    generate(tmp_path / "b", (root, *shifted), head)
    a, b = PlanRun(tmp_path / "a", *_plan_args()), PlanRun(tmp_path / "b", *_plan_args())
    assert not torch.allclose(a.load("key_w0"), b.load("key_w0"))


def test_guidance_options_with_the_tiny_model(head):
    model = MMVDM(MMVDMConfig.preset("tiny"), generator=torch.Generator().manual_seed(1)).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # adaLN-zero makes a fresh model output 0: perturb it so the checks mean something
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    B, V, F, h = 1, 3, 2, 4
    x = torch.randn(B, V, F, 16, h, h, generator=g)
    cond = torch.randn(B, V, F, model.config.conditioning_channels, h, h, generator=g)
    ref, ref_cond = torch.randn(B, 16, h, h, generator=g), torch.randn(B, model.config.conditioning_channels, h, h, generator=g)
    t = torch.tensor([500])
    d = Diffusion()
    with torch.no_grad():
        plain = model_denoiser(model, d, cond, ref, ref_cond)(x, t)
        # scale 1 is the conditional prediction
        torch.testing.assert_close(guidance("multiview", model, d, cond, ref, ref_cond, torch.ones(V))(x, t), plain)
        # the per-view unconditional pass equals running each view alone with everything dropped
        mv = guidance("multiview", model, d, cond, ref, ref_cond, 2.0)(x, t)
        alone = torch.cat([model_denoiser(model, d, torch.zeros_like(cond[:, v:v + 1]), torch.zeros_like(ref),
                                          torch.zeros_like(ref_cond))(x[:, v:v + 1], t) for v in range(V)], 1)
        torch.testing.assert_close(mv, 2 * plain - alone, atol=1e-5, rtol=1e-5)
        joint = guidance("cfg", model, d, cond, ref, ref_cond, 2.0)(x, t)
        assert not torch.allclose(joint, mv, atol=1e-4)
        # conventional CFG runs conditional + unconditional as one batched forward: the same as two passes
        uncond = model_denoiser(model, d, torch.zeros_like(cond), torch.zeros_like(ref), torch.zeros_like(ref_cond))
        torch.testing.assert_close(joint, 2 * plain - uncond(x, t), atol=1e-5, rtol=1e-5)
        calls = []
        handle = model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
        guidance("cfg", model, d, cond, ref, ref_cond, 2.0)(x, t)
        handle.remove()
        assert calls == [2 * B]


def _worker(rank, out, init_file, models_root):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    head = load_builtin_head()
    model, vae = load_models(models_root)
    run_generate(out, model, vae, head, make_reference(head), builtin_animation("talk", head, 25), FAST,
                 {"test": 1}, rank=rank, world=2, barrier=dist.barrier, log=lambda *_: None)
    dist.destroy_process_group()


def test_two_processes_give_the_same_outputs_as_one(tmp_path, models, head):
    import torch.multiprocessing as mp
    mp.spawn(_worker, args=(str(tmp_path / "two"), str(tmp_path / "init"), str(models[0])), nprocs=2)
    generate(tmp_path / "one", models, head)
    one, two = PlanRun(tmp_path / "one", *_plan_args()), PlanRun(tmp_path / "two", *_plan_args())
    for j in one.jobs:
        assert torch.equal(one.load(j.id), two.load(j.id))
    assert (tmp_path / "two" / "manifest.json").is_file()


def test_cli_generate_and_bad_input(tmp_path, models, head, capsys):
    ref = tmp_path / "ref.npz"
    make_reference(head).save(ref)
    root = str(models[0])
    argv = ["generate", "--reference", str(ref), "--model", root, "--plan", "small", "--key-steps", "2",
            "--other-steps", "1", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    assert (tmp_path / "cli" / "manifest.json").is_file()
    # the same folder with another run's settings is refused and nothing is overwritten
    before = (tmp_path / "cli" / "plan.json").read_text()
    assert main(argv + ["--seed", "7"]) == 2
    assert "different run" in capsys.readouterr().err and (tmp_path / "cli" / "plan.json").read_text() == before
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    base = ["generate", "--model", root, "--out", str(tmp_path / "bad")]
    for extra, message in ((["--reference", str(tmp_path / "photo.png")], "without tracking"),
                           (["--reference", str(ref), "--plan", "720"], "invalid choice: '720'"),
                           (["--reference", str(ref), "--animation", str(tmp_path / "none.npz")], "not found")):
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # the same command after the model folder's weights changed (retrained) is another run, refused
    import shutil
    copy = tmp_path / "retrained"
    shutil.copytree(root, copy)
    retrained = ["generate", "--reference", str(ref), "--model", str(copy), "--views", "small", "--key-steps", "2",
                 "--other-steps", "1", "--out", str(tmp_path / "cli_retrained")]
    assert main(retrained) == 0
    assert "warning: --views is deprecated; use --plan" in capsys.readouterr().err   # the old spelling still works
    MMVDM(MMVDMConfig.preset("tiny"), generator=torch.Generator().manual_seed(5)).save_pretrained(copy / "mmvdm")
    assert main(retrained) == 2 and "different run" in capsys.readouterr().err
    assert main(["generate", "--reference", str(ref), "--model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_views_given_whole_skip_the_multiview_unconditional_pass(models):
    """Multi-view CFG without the single-view passes of the views given whole (MVP4D §4: they are returned
    clean) samples the same latents as with them, with fewer passes."""
    from morph4d.diffusion.sampling import ddim_sample, guidance
    from morph4d.diffusion.schedule import Diffusion
    _, model, _ = models
    g = torch.Generator().manual_seed(3)
    V, F, h = 4, 2, 4
    x = torch.randn(1, V, F, 16, h, h, generator=g)
    cond = torch.randn(1, V, F, model.config.conditioning_channels, h, h, generator=g)
    ref, ref_cond = torch.randn(1, 16, h, h, generator=g), torch.randn(1, model.config.conditioning_channels, h, h,
                                                                       generator=g)
    mask = torch.zeros(1, V, F, dtype=torch.bool)
    mask[:, :2] = True                                                   # views 0 and 1 given whole
    given = torch.randn(x.shape, generator=g)
    diffusion, scale = Diffusion.for_model(model), torch.tensor([1.2, 1.3, 1.4, 1.5])
    calls = []
    hook = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        out = {}
        for name, m in (("all", None), ("skip", mask)):
            calls.clear()
            denoise = guidance("multiview", model, diffusion, cond, ref, ref_cond, scale, given_mask=m)
            out[name] = ddim_sample(denoise, diffusion, x, 2, given=given, given_mask=mask)
            out[name + "_calls"] = list(calls)
    hook.remove()
    torch.testing.assert_close(out["skip"], out["all"], rtol=1e-4, atol=1e-5)
    assert out["all_calls"] == [1, V] * 2 and out["skip_calls"] == [1, 2] * 2   # (joint, single-view batch) per step


def test_dry_run_sizes_the_plan_without_running(tmp_path, models, head, capsys):
    from morph4d.generation.plan import PRESETS, build_plan, plan_passes
    ref = tmp_path / "ref.npz"
    make_reference(head).save(ref)
    assert main(["generate", "--reference", str(ref), "--model", str(models[0]), "--plan", "small", "--dry-run",
                 "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    p = plan_passes(build_plan(PRESETS["small"]), "multiview")
    assert f"DDIM steps {p['steps']}, joint passes {p['joint']}" in text and f"single-view passes {p['single']}" in text
    assert "TFLOP" in text and not (tmp_path / "o").exists()


def test_a_reference_projection_model_gets_the_encoded_projection(tmp_path, models, head):
    """Issue 17 (ours): an MMVDM of the 76-channel layout is conditioned on the reference projected through the
    head mesh into each job's views and frames, encoded by the autoencoder (channels 59-74) with its confidence
    (75)."""
    vae = models[2]
    model = MMVDM(MMVDMConfig.preset("tiny", reference_projection=True, conditioning_channels=76),
                  generator=torch.Generator().manual_seed(0)).eval()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    anim = builtin_animation("talk", head, 25)
    run_generate(tmp_path / "p", model, vae, head, make_reference(head), anim, FAST, {"test": 1},
                 log=lambda *_: None)
    conds = [c for c in seen if c.abs().sum() > 0]                      # the conditional passes
    assert conds and all(c.shape[3] == 76 for c in seen)
    assert all(c[:, :, :, 59:75].abs().sum() > 0 and c[:, :, :, 75].max() > 0.3 for c in conds)
    assert all(c[:, :, :, 75].min() >= 0 and c[:, :, :, 75].max() <= 1 for c in conds)
