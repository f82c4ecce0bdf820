"""``exporter benchmark``: every format on every reachable runtime and device, in one report.

The model is exported once per format and params (one TensorFlow import for all), each artifact
runs on each target that takes it, and each (format, params, target) becomes one row: status and
reason, size, accuracy and agreement computed on the target, the phases timed apart, latency
percentiles and images/s at batch 1, peak memory, threads, runtime and version, export time.
"""

from __future__ import annotations

from exporter.benchmark.api import BenchmarkResult, benchmark_model

__all__ = ["BenchmarkResult", "benchmark_model"]
