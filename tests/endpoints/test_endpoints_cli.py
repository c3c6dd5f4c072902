"""``plugway endpoints list`` and ``plugway endpoints call``, as a user runs them (the offline demo model)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.runner import assert_clear_failure, plugway, write_config

CONFIG = """
database_url: sqlite:///{db}
providers: [{{id: demo, kind: demo}}]
models: [{{id: demo, provider: demo}}]
organisations:
  - id: acme
    plugins: [{{id: calculator}}]
    endpoints:
      - slug: helper
        model: demo
        system_prompt: "You help {{{{company}}}}."
        sessions: {{enabled: true}}
      - slug: quiet
        model: demo
        plugins: []
        active: false
"""


def test_list_and_call(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG.format(db=tmp_path / "p.db"))
    listed = plugway("endpoints", "list", "--json", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["slug"], r["plugins"], r["sessions"], r["active"]) for r in rows] == [("helper", ["calculator"], True, True), ("quiet", [], False, False)]
    called = plugway("endpoints", "call", "acme", "helper", "What is 6 * 7?", "--var", "company=Acme", "--config", str(config), cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert "42" in called.stdout and called.stdout.startswith("[demo model]")
    session = called.stderr.strip().splitlines()[-1].removeprefix("session: ")
    again = plugway("endpoints", "call", "acme", "helper", "thanks", "--var", "company=Acme", "--session", session, "--json", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["meta"]["session_id"] == session


def test_call_refusals_are_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG.format(db=tmp_path / "p.db"))
    assert_clear_failure(plugway("endpoints", "call", "acme", "quiet", "hi", "--config", str(config), cwd=tmp_path), "endpoint_not_found")
    assert_clear_failure(plugway("endpoints", "call", "acme", "helper", "hi", "--config", str(config), cwd=tmp_path), "missing_variable", "company")


def test_list_shows_endpoints_stored_through_the_management_api(tmp_path: Path) -> None:
    from runtime.config import EndpointConfig
    from runtime.endpoints.store import insert_endpoint
    from runtime.storage.db import open_database

    config = write_config(tmp_path, CONFIG.format(db=tmp_path / "p.db"))
    before = plugway("endpoints", "list", "--json", "--config", str(config), cwd=tmp_path)
    assert [r["source"] for r in json.loads(before.stdout)] == ["config", "config"]  # no database yet: YAML only
    engine = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    assert engine is not None
    try:
        insert_endpoint(engine, "acme", EndpointConfig.model_validate({"slug": "drafts", "model": "demo", "plugins": []}))
    finally:
        engine.dispose()
    listed = plugway("endpoints", "list", "--json", "--config", str(config), cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [(r["slug"], r["source"]) for r in rows] == [("helper", "config"), ("quiet", "config"), ("drafts", "api")]
    table = plugway("endpoints", "list", "--org", "acme", "--config", str(config), cwd=tmp_path)
    assert "drafts" in table.stdout and "management API" in table.stdout
    called = plugway("endpoints", "call", "acme", "drafts", "hello", "--config", str(config), cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert called.stdout.startswith("[demo model]")


def test_list_still_shows_the_yaml_endpoints_when_the_database_is_down(tmp_path: Path) -> None:
    from tests.fakes.anthropic_server import closed_port_url

    port = closed_port_url().rsplit(":", 1)[1]
    config = write_config(tmp_path, CONFIG.replace("sqlite:///{db}", f"postgresql://postgres@127.0.0.1:{port}/nothing").format())
    listed = plugway("endpoints", "list", "--json", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["slug"] for r in json.loads(listed.stdout)] == ["helper", "quiet"]
    assert "endpoints stored through the management API are not listed" in listed.stderr
    assert "Traceback" not in listed.stderr
