"""The README is checked against the code, so that it cannot quietly fall behind.

- Every setting of every pydantic model reachable from ``Settings`` appears in the
  configuration reference at its place in the tree (``organisations[].plugins[].mcp.roots``),
  and that reference, like every other YAML block of plugway configuration in the
  README, is a configuration plugway accepts.
- Every ``plugway`` command of the real argument parser appears, with all its options
  on one line (the commands table).
- The quick start's Python compiles.

No server, no network: these run in well under a second.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from runtime.cli import build_parser
from runtime.config import ConfigError, Settings, interpolate, settings_from_dict

README = Path(__file__).resolve().parents[1] / "README.md"
REFERENCE_HEADING = "Configuration reference"
QUICK_START_HEADING = "Quick start"
# Settings a configuration file cannot set (the loader does): named in the prose, not the reference.
SET_BY_THE_LOADER = {"embedded_default"}
# Options every command shares, documented once above the commands table.
SHARED_OPTIONS = {"--help", "--config"}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``## heading``, up to the next second-level heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match.group(1)


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


# -- settings ------------------------------------------------------------------------------


def nested_model(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The pydantic model inside a field's type, and whether the field holds a list of them."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found is not None:
                return found
        return None
    if origin is list:
        inner = nested_model(typing.get_args(annotation)[0])
        return (inner[0], True) if inner is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None


def missing_settings(model: type[BaseModel], nodes: list[Any], path: str = "") -> Iterator[str]:
    """Dotted paths of ``model``'s fields that no node of the documented YAML tree has."""
    for name, field in model.model_fields.items():
        dotted = f"{path}.{name}" if path else name
        if name in SET_BY_THE_LOADER:
            continue
        values = [node[name] for node in nodes if isinstance(node, dict) and name in node]
        if not values:
            yield dotted
            continue
        nested = nested_model(field.annotation)
        if nested is None:
            continue
        submodel, is_list = nested
        children: list[Any] = []
        for value in values:
            children.extend(value if is_list and isinstance(value, list) else [value])
        yield from missing_settings(submodel, children, f"{dotted}[]" if is_list else dotted)


def reference_block() -> str:
    blocks = fenced(section(readme(), REFERENCE_HEADING), "yaml")
    assert len(blocks) == 1, f"the configuration reference should be one YAML block, found {len(blocks)}"
    return blocks[0]


def as_configuration(block: str) -> dict[str, Any]:
    """A README YAML block with every ``${VAR}`` filled in, as plugway's loader would."""
    raw = yaml.safe_load(block)
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block))
    filled: dict[str, Any] = interpolate(raw, env={name: "readme-value" for name in names})
    return filled


def test_every_setting_is_in_the_configuration_reference() -> None:
    documented = yaml.safe_load(reference_block())
    missing = list(missing_settings(Settings, [documented]))
    assert not missing, "settings missing from the README's configuration reference: " + ", ".join(missing)


def test_settings_set_by_the_loader_are_explained() -> None:
    text = readme()
    for name in sorted(SET_BY_THE_LOADER):
        assert name in Settings.model_fields, f"{name} is no longer a setting: drop it from SET_BY_THE_LOADER"
        assert f"`{name}`" in text, f"README.md does not explain `{name}`"


def test_the_configuration_reference_is_a_valid_configuration() -> None:
    try:
        settings_from_dict(as_configuration(reference_block()), source="README configuration reference")
    except ConfigError as exc:
        pytest.fail(str(exc))


def test_every_yaml_block_parses_and_configuration_blocks_are_valid() -> None:
    blocks = fenced(readme(), "yaml")
    assert blocks
    for block in blocks:
        parsed = yaml.safe_load(block)  # a YAML error fails here, naming the line
        if isinstance(parsed, dict) and set(parsed) <= set(Settings.model_fields):
            try:
                settings_from_dict(as_configuration(block), source="README")
            except ConfigError as exc:
                pytest.fail(f"{exc}\nin this block:\n{block}")


def test_the_missing_setting_check_names_the_path() -> None:
    documented = yaml.safe_load(reference_block())
    first_plugin_with_mcp = next(
        plugin for plugin in documented["organisations"][0]["plugins"] if "probe_timeout_s" in (plugin.get("mcp") or {})
    )
    del first_plugin_with_mcp["mcp"]["probe_timeout_s"]
    assert "organisations[].plugins[].mcp.probe_timeout_s" in list(missing_settings(Settings, [documented]))


# -- commands ------------------------------------------------------------------------------


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, list[str]]]:
    """Every leaf command of the parser: (``plugway keys create``, its long options)."""
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subcommands:
        options = [
            option
            for action in parser._actions
            for option in action.option_strings
            if option.startswith("--") and option not in SHARED_OPTIONS
        ]
        yield " ".join(("plugway", *words)), options
        return
    for action in subcommands:
        for name, subparser in action.choices.items():
            yield from commands(subparser, (*words, name))


def test_the_command_walk_finds_nested_commands() -> None:
    found = dict(commands(build_parser()))
    assert "--scopes" in found["plugway keys create"]
    assert "plugway admin keys revoke" in found


def test_every_command_is_in_the_readme_with_all_its_options() -> None:
    lines = readme().splitlines()
    problems = []
    for command, options in commands(build_parser()):
        mentioning = [line for line in lines if re.search(rf"`{re.escape(command)}(?![\w-])", line)]
        if not mentioning:
            problems.append(f"{command}: not in README.md")
        elif not any(all(option in line for option in options) for line in mentioning):
            problems.append(f"{command}: no line names all of {', '.join(options)}")
    assert not problems, "\n".join(problems)


# -- the quick start ---------------------------------------------------------------------


def test_the_quick_start_python_compiles() -> None:
    blocks = fenced(section(readme(), QUICK_START_HEADING), "python")
    assert len(blocks) >= 2, "the quick start should show the openai and the anthropic SDK"
    for number, block in enumerate(blocks, 1):
        compile(block, f"README.md quick start block {number}", "exec")
    joined = "\n".join(blocks)
    assert "from openai import OpenAI" in joined and "from anthropic import Anthropic" in joined


def test_the_quick_start_runs_as_written_in_a_fresh_shell(tmp_path: Path) -> None:
    """The quick start's shell block, run as a user runs it: in a fresh shell, in the checkout
    (here a directory whose ``.venv`` is this checkout's), on a free port."""
    import json
    import os
    import signal
    import subprocess

    from tests.fakes.openai_server import free_port
    from tests.support import wait_until

    (block,) = fenced(section(readme(), QUICK_START_HEADING), "bash")
    (tmp_path / ".venv").symlink_to(README.parent / ".venv")
    fresh_shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "PORT": str(free_port())}
    shell = subprocess.Popen(
        ["bash", "-c", block], cwd=tmp_path, env=fresh_shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    log_file = tmp_path / "plugway.log"
    try:
        out, err = shell.communicate(timeout=240)
        assert shell.returncode == 0, err + log_file.read_text()
        # The embedded default logs each request, the quick start's included: the access line is
        # written once the answer has gone out, so it may land just after curl has its answer.
        wait_until(lambda: "POST /v1/chat/completions 200" in log_file.read_text(), "the request's log line")
    finally:
        # The gateway it started in the background: stopped as Ctrl-C would, with its MCP servers.
        os.killpg(shell.pid, signal.SIGINT)
    answer = json.loads(out)
    assert "391" in answer["choices"][0]["message"]["content"]
    assert answer["plugway"]["tool_calls"][0]["name"] == "calculator__evaluate"
    keys = tmp_path / "plugway-keys.env"
    assert keys.stat().st_mode & 0o777 == 0o600
