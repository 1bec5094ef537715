"""srdeploy.runtime: run and measure exported models without PyTorch (docs/runtime.md).

Modules (import what you need; nothing heavy is imported here):

* ``backends``: the registry (``backends()``, ``make_runner``, ``RunOptions``) and one module per
  backend (``backends.onnxruntime``, ``backends.tensorrt``, ``backends.torch``), each with its
  runner, its options and its ``BACKEND`` record.
* ``artifact`` / ``predict``: read exported artifacts (``open_artifact``) and drive them
  (``open_predictor`` -> ``SRPredictor`` | ``ImplicitPredictor`` for encoder/decoder pairs).
* ``measure``: ``ntire`` / ``steady`` measurement, ``results.json`` / ``results.txt`` / ``bench.log``.
* ``results``: the one typed results record (``BenchResult``) that measurement writes and the
  report, ``results.txt`` and the log read, with the shared labels and formats (``LABELS``, ``cell``).
* ``metrics``: PSNR (RGB, NTIRE; Y, papers), SSIM (Y), modcrop, bicubic downscaling.
* ``graphstats``: MACs / params / activations / #Conv from the ONNX graph (``graph_stats``; the
  per-node MAC rule is :func:`srdeploy.onnxlayer.node_macs`). The torch-side NTIRE counters live
  in ``srdeploy.export.torch_stats``.
* ``report``: ``sr-report`` (Markdown, self-contained HTML, plots, NTIRE score).
* ``bench``: ``sr-bench``'s library entry point (``BenchConfig``, ``run_bench``, ``ModelSource``);
  ``--model NAME`` is resolved by ``srdeploy.export.bench_source.run_bench_model``.

It never imports ``srdeploy.models``, ``srdeploy.export`` or torch (only the torch backend imports
torch, when its runner loads); ``tests/core/test_import_direction.py`` guards this.
"""
