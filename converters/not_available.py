"""The formats of the table whose pipelines are not built yet: each answers UNIMPLEMENTED."""
from converters.base import NotAvailableYet, register

for _name in ("docker",):
    register(_name)(type(f"NotAvailable_{_name}", (NotAvailableYet,), {}))
