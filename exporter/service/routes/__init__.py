"""The AutoML v1beta1 routes, one router per resource, both under ``PREFIX``.

``models``: list, ``models:import`` (extension), get, ``:export``. ``operations``: list, get,
delete, ``:cancel``, ``:wait``, ``:exportReport`` (extension). Paths such as
``{operation_id:segment}:cancel`` use the ``segment`` convertor of ``exporter.service.http``.
"""

from exporter.service import http  # noqa: F401  (registers the "segment" path convertor first)

PREFIX = "/v1beta1/projects/{project}/locations/{location}"
