"""tf_js targets: Node.js with the wasm backend, and headless Chromium with the wasm backend.

Both run the same timing code (runners/tfjs_bench.js), so their rows differ only by where the
model runs. Chromium is Debian's, driven by Playwright, with the page, the libraries and the model
served on loopback as the tf_js browser checks do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from converters.tf_js.browser import CHROMIUM, served
from converters.tf_js.node_runtime import check_node, node_modules
from exporter.benchmark.targets.base import RUNNERS, Artifact, NotRunnable, RunnerFailed, Target, Workload, run_json
from exporter.core.errors import ExportError

BENCH_JS = RUNNERS / "tfjs_bench.js"
TIMEOUT = 1800


@dataclass
class NodeWasm(Target):
    def check(self) -> None:
        try:
            check_node()
        except ExportError as error:
            raise NotRunnable(error.message) from None

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        command = [check_node(), str(BENCH_JS), str(artifact.folder), str(workload.data_dir)]
        command += [str(workload.min_count), str(workload.min_seconds), str(workload.warmup)]
        return run_json(command, TIMEOUT, {**os.environ, "NODE_PATH": str(node_modules())})


def _peak_rss_of_children() -> int:
    """The summed peak resident memory (VmHWM) of this process's Chromium processes."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" not in child.name().lower():
                continue
            status = Path(f"/proc/{child.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue  # a helper process that ended already
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


@dataclass
class ChromiumWasm(Target):
    def check(self) -> None:
        if not Path(CHROMIUM).exists():
            raise NotRunnable(f"no Chromium at {CHROMIUM}: install Debian's chromium ('make setup' does)")

    def measure(self, artifact: Artifact, workload: Workload) -> dict:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        meta = json.loads((workload.data_dir / "meta.json").read_text())
        inputs = (workload.data_dir / "inputs.f32").read_bytes()
        with served(artifact.folder) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page()
                page.route("**/inputs.f32", lambda route: route.fulfill(body=inputs))
                page.goto(url)
                page.add_script_tag(content=BENCH_JS.read_text())
                result = page.evaluate(
                    """async ([meta, minCount, minSeconds, warmup]) => {
                        tf.wasm.setWasmPaths('/lib/');
                        const inputs = new Float32Array(await (await fetch('/inputs.f32')).arrayBuffer());
                        const result = await benchmarkGraphModel(tf, () => tf.loadGraphModel('/model/model.json'),
                            inputs, meta, minCount, minSeconds, warmup, () => performance.now());
                        result.userAgent = navigator.userAgent;
                        return result;
                    }""",
                    [meta, workload.min_count, workload.min_seconds, workload.warmup],
                )
                result["peakMemoryBytes"] = _peak_rss_of_children()
                result["browserVersion"] = browser.version
            except PlaywrightError as error:
                raise RunnerFailed(f"the browser page failed: {' '.join(str(error).split())[:300]}") from None
            finally:
                browser.close()
        return result
