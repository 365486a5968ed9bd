"""Training and evaluation of the face SR networks.

* `python -m training.train`    — training loop (generic; model-specific parts live in `training.tasks`).
* `python -m training.evaluate` — Y-PSNR / SSIM (official DIC metric) per step vs bicubic, landmark NME.
* `training.data`    — UTKFace pairs (../shared/data/faces-utk), GT heatmaps, flip with landmark mirroring.
* `training.batches` — the training batches, drawn in order and made inline or ahead in worker processes.
* `training.metrics` — the metric functions.
"""
