"""The WebGL2 viewer in headless Chromium: `morph4d view` serves it, it loads without console errors, draws
the avatar, animates, and Ctrl-C stops the server cleanly.

Driver: Python playwright with Debian's chromium (``executable_path``; `make test` installs chromium as root,
and `playwright install` never runs). Chosen over selenium + chromium-driver because it reports console
messages and page errors as events, awaits the page's promises in ``evaluate``, and needs no driver binary
kept in step with the browser. WebGL runs on SwiftShader (CPU), so frames are slow here (~1 s at 320 px).

Also a script: ``python tests/test_viewer.py AVATAR_DIR --save docs/viewer.png`` screenshots the viewer and
prints its milliseconds per frame.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# SwiftShader: WebGL without a GPU (headless CI); --enable-unsafe-swiftshader is required for WebGL on it
FLAGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
SIZE = 320


def _png(data_url: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def start_view(avatar: Path, cache: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`morph4d view AVATAR --port 0 --no-browser` in a subprocess; returns it and the URL it prints."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "morph4d.cli", "view", str(avatar), "--port", "0", "--no-browser",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline, lines = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving http://"):
            return proc, line.split()[1]
    proc.kill()
    raise AssertionError("morph4d view printed no URL:\n" + "".join(lines))


def drive(url: str, screenshot: Path, twin: str | None = None) -> dict:
    """Load the page headless; returns console errors, two consecutive frames, the frame count, ms/frame and,
    with ``twin`` (a .m4da file name beside the page), the page's own placement of that file's frame 1."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": SIZE, "height": SIZE})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.evaluate("window.viewer.ready")
            frames = page.evaluate("viewer.frameCount")
            k = frames // 2
            a, b = _png(page.evaluate(f"viewer.snapshot({k})")), _png(page.evaluate(f"viewer.snapshot({k + 1})"))
            ms = page.evaluate("viewer.benchmark(3)")
            page.screenshot(path=str(screenshot))
            placed = None if twin is None else page.evaluate(
                """src => fetch(src).then(r => r.arrayBuffer()).then(buf => {
                       const p = makePlacer(parseAvatar(buf))(1);
                       return {means: Array.from(p.means), covs: Array.from(p.covs)};
                   })""", twin)
        finally:
            browser.close()
    return {"errors": errors, "a": a, "b": b, "frames": frames, "ms": ms, "placed": placed}


def _reference_render(avatar_dir: Path, folder: Path, frame: int) -> np.ndarray:
    """Frame ``frame`` of the served .m4da rendered by ``render_gaussians`` (degree-0 colour) from the
    file's camera hint at SIZE x SIZE: what the page shows before any orbiting. (H, W, 3) in [0, 1]."""
    import torch

    from morph4d.avatar.animated import read_animated
    from morph4d.avatar.gaussians import render_gaussians
    from morph4d.avatar.model import load_avatar
    from morph4d.cameras import orbit_cameras
    anim = read_animated(folder / "avatar.m4da")
    cam = anim.camera
    distance = float(np.linalg.norm(np.subtract(cam["position"], cam["target"])))
    cameras = orbit_cameras(torch.zeros(1), torch.zeros(1), distance, cam["fov_deg"], SIZE, SIZE,
                            target=tuple(cam["target"]))
    with torch.no_grad():
        w = load_avatar(avatar_dir).world(torch.from_numpy(anim.vertices[frame]), None)
        image = render_gaussians(w.means, w.quats, w.scales, w.opacities, w.sh[:, :1], cameras).image[0]
    return image.numpy()


def _need_browser() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: `make test` installs Debian's chromium when run as root "
                    "(apt-get install chromium)")


def test_viewer_plays_the_avatar_in_headless_chromium(fitted_avatar, tmp_path):
    _need_browser()
    from morph4d.avatar.animated import place, read_animated
    from morph4d.avatar.viewer import cache_folder
    from morph4d.cli import main
    proc, url = start_view(fitted_avatar, tmp_path / "cache", "--animation", "talk", "--frames", "9")
    try:
        # the fitted sequence (with the deformation U-Net's offsets) beside the page, for the placement twin
        twin = cache_folder(fitted_avatar, "talk", tmp_path / "cache") / "fitted.m4da"
        assert main(["export", str(fitted_avatar), "--format", "animated", "--animation", "fitted",
                     "--out", str(twin)]) == 0
        r = drive(url, tmp_path / "viewer.png", twin.name)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out, out
    assert r["errors"] == []
    assert r["frames"] == 9
    assert r["a"].shape == (SIZE, SIZE, 3)
    # not blank: the avatar covers a good part of the white background
    drawn = (np.abs(r["a"].astype(int) - 255).max(-1) > 16).mean()
    assert 0.05 < drawn < 0.9, drawn
    # two consecutive animation frames differ (talk: the jaw moves every frame)
    assert (np.abs(r["a"].astype(int) - r["b"].astype(int)).max(-1) > 8).sum() > 20
    assert (tmp_path / "viewer.png").stat().st_size > 1000 and r["ms"] > 0
    # the same frame drawn by our CPU 3DGS rasterizer from the camera hint (the page's initial view)
    ref_image = _reference_render(fitted_avatar, cache_folder(fitted_avatar, "talk", tmp_path / "cache"), 9 // 2)
    diff = np.abs(r["a"] / 255.0 - ref_image)
    print(f"viewer vs render_gaussians: mean abs difference {diff.mean():.4f}, 99th percentile "
          f"{np.percentile(diff, 99):.3f}")
    assert diff.mean() < 0.02
    # the JavaScript placement equals the documented numpy placement (deformation included)
    ref = place(read_animated(twin), 1)
    np.testing.assert_allclose(np.reshape(r["placed"]["means"], (-1, 3)), ref["means"], atol=1e-6)
    covs = np.reshape(r["placed"]["covs"], (-1, 6))
    upper = ref["covariances"][:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    assert (np.abs(covs - upper).max(1) <= 1e-4 * ref["scales"].max(1) ** 2).all()
    print(f"viewer: {r['ms']:.0f} ms per frame at {SIZE} px in headless chromium (SwiftShader)")


if __name__ == "__main__":
    import argparse
    import tempfile
    parser = argparse.ArgumentParser(description="screenshot the viewer of an avatar folder in headless chromium")
    parser.add_argument("avatar")
    parser.add_argument("--save", default="docs/viewer.png")
    parser.add_argument("--animation", default="talk")
    parser.add_argument("--size", type=int, default=480)
    args = parser.parse_args()
    SIZE = args.size
    with tempfile.TemporaryDirectory() as cache:
        proc, url = start_view(Path(args.avatar), Path(cache), "--animation", args.animation)
        try:
            result = drive(url, Path(args.save))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    print(f"wrote {args.save}; console errors: {result['errors'] or 'none'}; "
          f"{result['ms']:.0f} ms per frame at {SIZE} px (SwiftShader)")
