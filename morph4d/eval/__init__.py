"""Evaluation (stage 10): the papers' metrics on any run against a ground-truth sequence (``morph4d eval``), the
synthetic benchmark on held-out identities with its baselines, and ``morph4d quality`` (a preset of it).

Owns: ``protocol`` (MVP4D S3.1 crops and masks), ``inputs`` (ground truth and runs), the metric modules
(``reprojection`` RE, ``keypoints`` AKD / AED, ``identity`` CSIM, ``jod`` JOD, ``learned`` LPIPS / FID / FVD),
``baselines`` (reference projection, oracle avatar), ``run`` (scoring and summaries), ``report`` (report.json /
.md / .csv / plots), ``synthetic`` (the benchmark), ``quality`` (its preset), ``portrait`` (IM-Portrait's
benchmark on held-out identities) and ``cli``. PSNR, SSIM and L1 live
in the foundation module ``morph4d.metrics`` so every stage scores alike.

May import: every stage below it; never ``pipeline`` or ``morph4d.cli``.
"""
