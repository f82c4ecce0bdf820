"""Alembic migrations of the service's store, shipped inside the package (no alembic.ini).

``Store.migrate()`` runs them. To write the next revision from a checkout, against a database
at head::

    from alembic import command
    from exporter.service.migrations import alembic_config

    command.revision(alembic_config("sqlite:///dev.db"), message="what changes", autogenerate=True,
                     rev_id="0002")

then review the generated file in ``versions/``. Revisions are numbered 0001, 0002, ... in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

FOLDER = Path(__file__).resolve().parent

# The revision that matches the schema `Base.metadata.create_all` made before Alembic.
BASELINE = "0001"


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic Config for this folder: run on `connection` when given, else on `url`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(FOLDER))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config
