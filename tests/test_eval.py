"""The evaluation metrics (issue 19), each against an independent reference or a property it must satisfy."""

import math

import numpy as np
import pytest
import torch

from morph4d.cli import main
from morph4d.eval.learned import frechet_distance
from morph4d.eval.protocol import crop
from morph4d.eval.reprojection import triangulate
from morph4d.metrics import l1, psnr, ssim


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
