"""Evaluation (stage 10): quality reports of a model against held-out ground truth.

Owns: ``quality`` (``morph4d quality``: autoencoder PSNR, generated views vs ground truth and a
reference-projection baseline per angle, MVP4D Table 7 ablation; report.json / report.md) and ``cli``.
Image metrics themselves live in the foundation module ``morph4d.metrics`` so every stage scores alike.

May import: every stage below it; never ``pipeline`` or ``morph4d.cli``.
"""
