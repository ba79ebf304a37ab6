"""Multi-view head video data (stage 5, MVP4D §3.3, Table 2, S2.2).

Owns: procedural identities (``identity``) and their rendering (``scene``: posed head + hair/glasses
meshes, textured, lit), synthetic datasets (``synth``), held-out identities with their ground truth
(``heldout``), the dataset format v1 (``format``, docs/DATA.md; its one writer and readers), training
windows sampled like MVP4D's curriculum (``loader``), importers of public datasets (``importers``) and
the ``morph4d data`` commands (``cli``). This package file stays empty so ``import morph4d.data.format``
does not load the renderer.

May import: foundation, ``heads``, ``mesh``, ``models``, ``conditioning``.
"""
