"""Hardware-specific back ends, one class each behind an interface: the serving image builders
(Docker engine, daemonless through a registry's HTTP API) and the Edge TPU compiler (binary, or
its container image). They import only ``exporter.core``."""
