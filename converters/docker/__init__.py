"""modelFormat ``docker``: builds on ``tf_saved_model``; the converter (``converter``), the
image itself is built by the ``containers`` back end.
"""

from converters.docker.converter import DockerImageConverter

__all__ = ["DockerImageConverter"]
