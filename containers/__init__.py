"""Container back ends (docker export, Edge TPU compiler image): not built yet."""
