"""Fixtures shared by several test files."""

import pytest

from morph4d.threads import torch_threads


@pytest.fixture
def one_thread():
    """One torch thread for the test: small per-pixel ops run faster so, and results then match the
    library code that pins one thread itself (``synthesize``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def fitted_avatar(tmp_path_factory):
    """A real avatar folder: `morph4d fit` (3 iterations, with the deformation U-Net) on a tiny synthetic
    sequence (4 views x 3 frames at 32 px). For export and viewer tests, not for quality."""
    from morph4d.avatar.fit import FitConfig, fit_sequence
    from morph4d.data.synth import SynthConfig, synthesize
    root = tmp_path_factory.mktemp("avatar")
    names = synthesize(SynthConfig(out=str(root / "ds"), identities=1, views=4, frames=3, resolution=32,
                                   progress=False), log=lambda *_: None)
    fit_sequence(root / "ds" / names[0], root / "avatar", FitConfig(iterations=3, resolution=32, offmesh=None,
                                                                     densify=None), log=lambda *_: None)
    return root / "avatar"
