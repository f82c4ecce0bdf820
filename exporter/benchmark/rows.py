"""One row of the benchmark matrix: a format with its params, on one target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PASSED = "passed"
NOT_RUNNABLE = "not runnable"  # exported, but this target cannot run it here (the reason says why)
NOT_AGREEING = "not agreeing"  # ran, but its top-1 differs from the source's too often
EXPORT_FAILED = "export failed"
STATUSES = (PASSED, NOT_AGREEING, NOT_RUNNABLE, EXPORT_FAILED)

# The largest tolerance of any format's verification is 3% of flips (tf_js uint8): a target whose
# top-1 agrees with the source on fewer images than this does not run the artifact as exported.
AGREEMENT_FLOOR = 0.97

# The runner's JSON keys, by the row's field names.
MEASURED = {
    "load_init_ms": "loadInitMs",
    "first_inference_ms": "firstInferenceMs",
    "warmup_ms": "warmupMs",
    "p50_ms": "p50Ms",
    "p90_ms": "p90Ms",
    "p99_ms": "p99Ms",
    "images_per_s": "imagesPerSecond",
    "steady_runs": "steadyRuns",
    "steady_seconds": "steadySeconds",
    "peak_memory_bytes": "peakMemoryBytes",
    "threads": "threads",
    "runtime": "runtime",
    "runtime_version": "runtimeVersion",
    "accuracy": "accuracy",
    "agreement": "agreement",
}


@dataclass
class Row:
    model_format: str
    params: str  # KEY=VALUE pairs as given, space-separated
    target: str
    status: str
    reason: str = ""
    size_bytes: int | None = None
    export_seconds: float | None = None
    accuracy: float | None = None
    source_accuracy: float | None = None
    agreement: float | None = None
    load_init_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    steady_runs: int | None = None
    steady_seconds: float | None = None
    peak_memory_bytes: int | None = None
    threads: int | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    regression: str = ""  # against --baseline: what got worse beyond the margin

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model_format, self.params, self.target

    @property
    def label(self) -> str:
        return f"{self.model_format} {self.params}".strip()

    @property
    def short_label(self) -> str:
        """The format and its param values only, for charts: ``tflite uint8``."""
        values = [pair.partition("=")[2] for pair in self.params.split()]
        return " ".join([self.model_format, *values])

    def take(self, measured: dict) -> None:
        """Fill in a runner's answer and decide the status by its agreement with the source."""
        for name, key in MEASURED.items():
            setattr(self, name, measured.get(key))
        if self.agreement is not None and self.agreement < AGREEMENT_FLOOR:
            self.status = NOT_AGREEING
            self.reason = (
                f"top-1 agrees with the source on {self.agreement:.1%} of the held-out images on this target "
                f"(below {AGREEMENT_FLOOR:.0%})"
            )
        else:
            self.status = PASSED

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


FIELDS = tuple(f.name for f in fields(Row))
