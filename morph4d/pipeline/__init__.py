"""Whole-pipeline jobs that chain the stages (stage 11).

Owns: ``avatar`` (``morph4d avatar``: reference -> generate -> fit -> renders, .ply, viewer; pipeline.json,
resumable stage by stage), ``demo`` (``make demo``: head orbit + contact sheet + conditioning grids + the
avatar pipeline on a held-out synthetic portrait) and ``cli``.

May import: every stage below it; only ``morph4d.cli`` sits above.
"""
