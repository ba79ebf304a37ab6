"""Tracking (between data and generation): a portrait photo or a driving video -> head-model parameters.

Owns: the face detector / landmark / iris / matte networks run from the files of the ``mediapipe`` wheel
(``detect``), landmark embeddings on the head models (``embedding``), the fit of shape, expression, jaw,
eyes, head pose and focal length to landmarks (``fit``), portrait preparation (crop, matte, outcrop) and the
tracked reference (``portrait``), driving-video tracking into an animation (``video``), overlays, and the
``morph4d track`` command (``cli``).

May import: foundation, heads, mesh, models, conditioning, data, diffusion, generation (it writes the generation
stage's tracked reference format). Sits after generation and before avatar; the pipeline and the CLI use it.
"""
