"""modelFormat ``tf_js``: the converter (``converter``), its graph rewrites for TensorFlow.js
(``graph``), and the JavaScript runtimes it is verified in: Node.js (``node_runtime``) and
Chromium (``browser``), with their scripts in ``js/``.
"""

from converters.tf_js.converter import TFJSConverter

__all__ = ["TFJSConverter"]
