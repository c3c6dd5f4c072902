"""The configuration file and the plugway command, run as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.config import ConfigError, interpolate, load_settings

PLUGWAY = [sys.executable, "-m", "runtime.cli"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "220", **(env or {})}
    full_env.pop("PLUGWAY_CONFIG", None)
    return subprocess.run([*PLUGWAY, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)


def test_interpolation_with_defaults_and_paths() -> None:
    env = {"KEY": "sk-1"}
    assert interpolate({"a": ["${KEY}", "x-${MISSING:-dflt}-y"]}, env=env) == {"a": ["sk-1", "x-dflt-y"]}
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api_key: environment variable NOPE is not set"):
        interpolate({"providers": [{"api_key": "${NOPE}"}]}, env={})


def test_full_design_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "KB_TOKEN", "WA_ACCESS_TOKEN", "WA_APP_SECRET", "WA_VERIFY_TOKEN"):
        monkeypatch.setenv(var, f"secret-{var}")
    monkeypatch.setenv("PLUGWAY_SECRETS_KEY", "k" * 40)
    design = (Path(__file__).parent.parent.parent / "shared" / "DESIGN.md")
    if not design.exists():
        pytest.skip("shared/DESIGN.md is not beside this checkout")
    text = design.read_text()
    yaml_block = text.split("```yaml", 1)[1].split("```", 1)[0]
    # The example names a fallback and an alias target it does not define; the loader rightly
    # refuses unknown models, so they join the models: list (before the next top-level key).
    defined = "  - {id: claude-haiku-4-5, provider: anthropic}\n  - {id: claude-sonnet-4-5, provider: anthropic}\n"
    yaml_block = re.sub(r"(\nmodels:\n(?:[ #].*\n)*)", lambda m: m.group(1) + defined, yaml_block, count=1)
    settings = load_settings(write(tmp_path, yaml_block))
    assert settings.provider("openai").api_key == "secret-OPENAI_API_KEY"  # type: ignore[union-attr]
    acme = settings.organisation("acme")
    assert acme is not None and acme.plugin("kb").mcp.headers == {"Authorization": "Bearer secret-KB_TOKEN"}  # type: ignore[union-attr]
    assert settings.whatsapp.apps[0].enabled_plugin_ids == ["orders", "clock"]
    assert settings.secrets_key == "k" * 40


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("models: [{id: m, provider: ghost}]", "models[0].provider: unknown provider 'ghost'"),
        ("organisations: [{id: a, plugins: [{id: o, mcp: {command: [x], url: 'http://y'}}]}]", "organisations[0].plugins[0].mcp: give exactly one of 'command' or 'url'"),
        ("providers: [{id: p, kind: openai, base_url: 'http://x', api_key: '${PLUGWAY_TEST_UNSET_VAR}'}]", "providers[0].api_key: environment variable PLUGWAY_TEST_UNSET_VAR is not set"),
        ("orchestration: {max_tool_rounds: 0}", "orchestration.max_tool_rounds"),
        ("colour: blue", "colour: unknown setting"),
        ("providers: [{id: p, kind: wizard}]", "providers[0].kind"),
        # A negative price credited the budget and made recording a stream's usage raise.
        ("providers: [{id: p, kind: demo}]\nmodels: [{id: m, provider: p, price: {input_per_mtok: -1}}]", "models[0].price.input_per_mtok"),
        ("providers: [{id: p, kind: demo}]\nmodels: [{id: m, provider: p, price: {output_per_mtok: .inf}}]", "models[0].price.output_per_mtok"),
    ],
)
def test_config_errors_name_the_path(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml_text))
    assert message in str(info.value)


def test_serve_with_bad_config_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "organisations: [{id: a, plugins: [{id: ghost}]}]")
    result = run("serve", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "plugins[0].id: plugin 'ghost' is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    path = write(tmp_path, f"database_url: sqlite:///{tmp_path}/k.db\norganisations: [{{id: acme}}]\n")
    created = run("keys", "create", "--org", "acme", "--name", "ci", "--rpm", "60", "--config", str(path), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("pw_") and len(key) > 40
    assert key not in (tmp_path / "k.db").read_bytes().decode("latin-1")
    listed = run("keys", "list", "--config", str(path), cwd=tmp_path)
    assert "acme" in listed.stdout and key[:10] in listed.stdout
    key_id = next(word for word in listed.stdout.split() if word.startswith("key_"))
    assert run("keys", "revoke", key_id, "--config", str(path), cwd=tmp_path).returncode == 0
    assert run("keys", "revoke", key_id, "--config", str(path), cwd=tmp_path).returncode == 1
    unknown = run("keys", "create", "--org", "nobody", "--config", str(path), cwd=tmp_path)
    assert unknown.returncode == 2 and "nobody" in unknown.stderr


def test_plugins_list_shows_sources_and_tools(tmp_path: Path) -> None:
    result = run("plugins", "list", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for expected in ("clock", "builtin", "calculator", "forecast", "entrypoint:plugway-forecast", "get_forecast"):
        assert expected in result.stdout
