"""docker-compose.yml and the worker image recipe, checked against what the code reads: every
EXPORTER_* variable is a setting or a variable the code reads, the settings validate, the services
the URLs name exist, and the recipe copies what the package is built from."""

from __future__ import annotations

import os
import re
import tomllib

import pytest
import yaml

from conftest import REPO
from exporter.service.settings import ServiceSettings

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = ("api", "worker")  # the services that run this project's image
RECIPE = REPO / "containers" / "worker.Dockerfile"


def _read_by_code() -> set[str]:
    """Every EXPORTER_* name written as a whole string in the package's source."""
    names = set()
    for package in ("exporter", "converters", "containers"):
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"\"(EXPORTER_[A-Z0-9_]+)\"", path.read_text()))
    return names


def _settings_variables() -> set[str]:
    return {f"EXPORTER_{name.upper()}" for name in ServiceSettings.model_fields}


@pytest.mark.parametrize("service", OURS)
def test_every_variable_is_read_by_the_code(service):
    variables = set(SERVICES[service]["environment"])
    unknown = {v for v in variables if v.startswith("EXPORTER_")} - _settings_variables() - _read_by_code()
    assert unknown == set(), f"{service} sets variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("service", OURS)
def test_the_settings_validate(service, monkeypatch):
    for name in list(os.environ):
        if name.startswith("EXPORTER_"):
            monkeypatch.delenv(name)
    for name, value in SERVICES[service]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = ServiceSettings(_env_file=None)
    assert settings.runner == "celery"
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_visibility_seconds > settings.sandbox_wall_seconds
    if service == "worker":
        grace = int(SERVICES["worker"]["stop_grace_period"].rstrip("s"))
        assert grace > settings.drain_seconds  # compose kills only after the drain
    else:
        assert settings.auth_file is not None  # it listens on 0.0.0.0: refused without auth


def test_the_urls_name_services_of_the_file_and_their_credentials():
    environment = SERVICES["worker"]["environment"]
    assert re.match(r"redis://redis:6379/\d+$", environment["EXPORTER_BROKER_URL"])
    postgres = SERVICES["postgres"]["environment"]
    user, password, database = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
    assert environment["EXPORTER_DATABASE_URL"] == f"postgresql+psycopg://{user}:{password}@postgres:5432/{database}"
    assert SERVICES["api"]["environment"]["EXPORTER_DATABASE_URL"] == environment["EXPORTER_DATABASE_URL"]
    assert {"api", "worker", "redis", "postgres", "registry"} <= set(SERVICES)


def test_the_commands_are_verbs_of_the_cli():
    import typer

    from exporter.cli import app

    verbs = set(typer.main.get_command(app).commands)
    assert SERVICES["api"]["command"][:2] == ["exporter", "serve"] and "serve" in verbs
    assert SERVICES["worker"]["command"] == ["exporter", "worker"] and "worker" in verbs
    # The API and the workers share the data folder: the workers read the models the API imported.
    data = {v for v in SERVICES["api"]["volumes"] if v.endswith(":/srv/data")}
    assert data and data <= set(SERVICES["worker"]["volumes"])


def test_the_recipe_copies_what_the_package_is_built_from():
    recipe = RECIPE.read_text()
    copied = {part for line in re.findall(r"^COPY (.+)$", recipe, re.M) for part in line.split()[:-1]}
    for path in copied:
        assert (REPO / path).exists(), f"the recipe copies {path}, which is not in the checkout"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied
    assert {"requirements.lock", "package-lock.json"} <= copied
    for service in OURS:
        assert SERVICES[service]["build"]["dockerfile"] == "containers/worker.Dockerfile"
