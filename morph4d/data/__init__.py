"""Multi-view head video data: procedural identities and rendering (``identity``, ``render``), synthetic
datasets (``synth``), the on-disk format (``format``, docs/DATA.md), training windows sampled like
MVP4D's curriculum (``loader``), importers of public datasets (``importers``) and the ``morph4d data``
command (``cli``). Import the submodules; this package file stays empty so ``import morph4d.data.format``
does not load the renderer.
"""
