"""tf_js exports in a real browser: headless Chromium (Debian's) driven by Playwright.

A page served on loopback loads TensorFlow.js with the wasm backend and either runs the graph
model or AutoML's own loader, ``@tensorflow/tfjs-automl``'s ``loadImageClassification``, which
reads ``dict.txt`` beside ``model.json``. Used by the tests and the benchmark, not by every export.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from converters.tf_js.node_runtime import node_modules
from exporter.core.errors import Code, ExportError

PAGE = Path(__file__).resolve().parent / "js" / "page.html"
LIBRARIES = {
    "tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "tf-automl.min.js": "@tensorflow/tfjs-automl/dist/tf-automl.min.js",
}
CHROMIUM = os.environ.get("EXPORTER_CHROMIUM", "/usr/bin/chromium")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def served(model_dir: Path):
    """The page, the libraries and the model on a loopback HTTP server; yields the page URL."""
    with tempfile.TemporaryDirectory(prefix="browser-") as root:
        site = Path(root)
        (site / "lib").mkdir()
        for name, relative in LIBRARIES.items():
            shutil.copy(node_modules() / relative, site / "lib" / name)
        for wasm in (node_modules() / "@tensorflow/tfjs-backend-wasm/dist").glob("*.wasm"):
            shutil.copy(wasm, site / "lib" / wasm.name)
        shutil.copytree(model_dir, site / "model")
        shutil.copy(PAGE, site / "index.html")
        handler = functools.partial(_QuietHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
        finally:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def browser_page(model_dir: Path, inputs: bytes):
    """A Chromium page on the model; `inputs` is served to it as /inputs.bin (a page.evaluate
    argument of the same images, base64 in a JSON string, costs tens of seconds at 224x224)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise ExportError(
            Code.FAILED_PRECONDITION, f"no Chromium at {CHROMIUM}: install Debian's chromium ('make setup' does)"
        )
    with served(model_dir) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.route("**/inputs.bin", lambda route: route.fulfill(body=inputs))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            if errors:
                raise ExportError(Code.INTERNAL, f"the browser page failed: {errors[0]}")
            yield page
        finally:
            browser.close()


def browser_predict(model_dir: Path, inputs: np.ndarray) -> tuple[np.ndarray, dict]:
    """Scores [N, C] of the tfjs graph model on normalized inputs, in headless Chromium (wasm)."""
    count, height, width, _ = inputs.shape
    floats = np.ascontiguousarray(inputs, dtype=np.float32).tobytes()
    with browser_page(model_dir, floats) as page:
        result = page.evaluate("([n, h, w]) => predictGraph(n, h, w)", [count, height, width])
    return np.asarray(result["scores"], dtype=np.float32), {
        "backend": result["backend"],
        "msPerImage": result["msPerImage"],
    }


def automl_classify(model_dir: Path, pixels: np.ndarray) -> tuple[list[str], str]:
    """Top labels from @tensorflow/tfjs-automl's loadImageClassification on 0..255 pixels
    (whole numbers: sent as bytes)."""
    count, height, width, _ = pixels.shape
    if not np.array_equal(pixels, np.clip(np.round(pixels), 0, 255)):
        raise ValueError("automl_classify takes whole-number pixels in 0..255")
    with browser_page(model_dir, np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()) as page:
        result = page.evaluate("([n, h, w]) => classifyAutoML(n, h, w)", [count, height, width])
    return result["top"], result["backend"]
