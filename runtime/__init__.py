"""srdeploy.runtime: run and measure exported models without PyTorch (docs/runtime.md).

Modules (import what you need; nothing heavy is imported here):

* ``runners``: the runner protocol and registry (``make_runner``, ``OrtRunner``, ``TrtRunner``,
  ``TorchRunner``, ``OrtOptions``, ``TrtOptions``, ``TorchOptions``, ``Timing``, ``MemoryReport``).
* ``artifact`` / ``predict``: read exported artifacts (``open_artifact``) and drive them
  (``open_predictor`` -> ``SRPredictor`` | ``ImplicitPredictor`` for encoder/decoder pairs).
* ``measure``: ``ntire`` / ``steady`` measurement, ``results.json`` / ``results.txt``.
* ``metrics``: PSNR (RGB, NTIRE; Y, papers), SSIM (Y), modcrop, bicubic downscaling.
* ``graphstats``: MACs / params / activations / #Conv from the ONNX graph (``graph_stats``), and
  the fvcore convention (``fvcore_gmacs``) when PyTorch and fvcore are installed.
* ``report``: ``sr-report`` (Markdown, self-contained HTML, plots, NTIRE score).
* ``bench``: ``sr-bench``'s library entry point (``BenchConfig``, ``run_bench``).

It imports neither ``srdeploy.models`` nor ``srdeploy.export`` at module level.
"""
