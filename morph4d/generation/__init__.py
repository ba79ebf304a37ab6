"""Generating multi-view videos from one reference (stage 8, MVP4D §4, Fig. S10-S11).

Owns: ``reference`` (the tracked reference .npz and its canonicalisation), ``plan`` (the sampling plan as a
job graph, plan.json + jobs/, resumable), ``generate`` (the job runner and ``prepare_generation``: the one
path that turns user inputs into a ready generation for ``morph4d generate`` and ``morph4d avatar``),
``videos`` (the generated-videos folder: its one writer and one reader, manifest.json) and ``cli``
(``morph4d generate``, ``morph4d reference``).

May import: every stage below it (foundation ... ``diffusion``); never ``training``, ``avatar`` or above.
"""
