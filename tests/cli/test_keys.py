"""``plugway keys``: limits of any size the database can hold, clear refusals, and update semantics,
on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from runtime.storage.db import make_engine
from runtime.storage.migrations import upgrade
from runtime.storage.models import ApiKey
from tests.cli.runner import assert_clear_failure, plugway, write_config


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    upgrade(database_url)  # so a test can look at the keys table even when the command was refused
    return write_config(tmp_path, f"database_url: '{database_url}'\nkey_cache_ttl_s: 30\norganisations: [{{id: acme}}]\n")


def keys(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return plugway("keys", *args, "--config", str(config), cwd=config.parent)


def stored_keys(database_url: str) -> list[ApiKey]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(ApiKey).order_by(ApiKey.created_at)))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def create(config: Path, *args: str) -> str:
    """Mint a key; returns its id."""
    result = keys(config, "create", "--org", "acme", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("pw_")
    return next(word for word in result.stderr.split() if word.startswith("key_"))


def listed_row(config: Path, key_id: str) -> list[str]:
    listed = keys(config, "list")
    assert listed.returncode == 0, listed.stderr
    # Piped, each key is one tab-separated line: id, organisation, prefix, rpm, daily tokens, revoked, name, ...
    line = next(line for line in listed.stdout.splitlines() if key_id in line)
    return line.split("\t")


def test_limits_beyond_32_bits_are_stored_and_listed(config: Path, database_url: str) -> None:
    key_id = create(config, "--daily-tokens", "1000000000000", "--rpm", "2147483648")
    row = listed_row(config, key_id)
    assert "2147483648" in row and "1000000000000" in row
    assert [(k.rpm, k.daily_tokens) for k in stored_keys(database_url)] == [(2147483648, 1000000000000)]
    updated = keys(config, "update", key_id, "--daily-tokens", str(2**63 - 1))
    assert updated.returncode == 0, updated.stderr
    assert stored_keys(database_url)[0].daily_tokens == 2**63 - 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--rpm", "-1"], ["--rpm", "negative"]),
        (["--daily-tokens", "-5"], ["--daily-tokens", "negative"]),
        (["--rpm", str(2**63)], ["--rpm", "at most 9223372036854775807"]),
        (["--daily-tokens", "99999999999999999999999"], ["--daily-tokens", "at most"]),
        (["--rpm", "lots"], ["--rpm", "'lots'"]),
        (["--name", "n" * 300], ["--name", "300 characters", "200"]),
        (["--models", "nonexistent"], ["model 'nonexistent'", "not configured", "organisation 'acme'"]),
    ],
)
def test_keys_create_refuses_bad_values_in_one_line(
    config: Path, database_url: str, args: list[str], fragments: list[str]
) -> None:
    result = keys(config, "create", "--org", "acme", *args)
    assert_clear_failure(result, *fragments)
    assert stored_keys(database_url) == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--rpm", "-1"], ["--rpm", "negative"]),
        (["--daily-tokens", str(2**64)], ["--daily-tokens", "at most"]),
        (["--name", "n" * 300], ["--name", "200"]),
        (["--models", "nonexistent"], ["model 'nonexistent'", "not configured"]),
        ([], ["nothing to change"]),
    ],
)
def test_keys_update_refuses_bad_values_in_one_line(
    config: Path, database_url: str, args: list[str], fragments: list[str]
) -> None:
    key_id = create(config, "--rpm", "60", "--daily-tokens", "5000", "--name", "ci")
    result = keys(config, "update", key_id, *args)
    assert_clear_failure(result, *fragments)
    assert [(k.rpm, k.daily_tokens, k.name) for k in stored_keys(database_url)] == [(60, 5000, "ci")]


def test_keys_update_changes_only_the_limits_given(config: Path, database_url: str) -> None:
    key_id = create(config, "--rpm", "60", "--daily-tokens", "5000")

    assert keys(config, "update", key_id, "--rpm", "100").returncode == 0
    assert [(k.rpm, k.daily_tokens) for k in stored_keys(database_url)] == [(100, 5000)]

    cleared = keys(config, "update", key_id, "--daily-tokens", "none")
    assert cleared.returncode == 0, cleared.stderr
    assert "daily_tokens=unlimited" in cleared.stdout
    assert [(k.rpm, k.daily_tokens) for k in stored_keys(database_url)] == [(100, None)]

    assert keys(config, "update", key_id, "--rpm", "0", "--name", "frozen").returncode == 0
    assert [(k.rpm, k.daily_tokens, k.name) for k in stored_keys(database_url)] == [(0, None, "frozen")]
    # 0 refuses every request and is shown as 0; no limit is shown as "unlimited", never alike.
    row = listed_row(config, key_id)
    assert (row[3], row[4], row[6]) == ("0", "unlimited", "frozen"), row


def test_keys_update_refuses_revoked_and_unknown_keys(config: Path, database_url: str) -> None:
    key_id = create(config, "--rpm", "60")
    revoked = keys(config, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    # The configured key cache TTL is how long running gateways may still accept it.
    assert "within 30 seconds" in revoked.stdout
    assert_clear_failure(keys(config, "update", key_id, "--rpm", "5"), key_id, "revoked")
    assert stored_keys(database_url)[0].rpm == 60
    assert_clear_failure(keys(config, "update", "key_0000000000000000", "--rpm", "5"), "no key 'key_0000000000000000'")
    assert_clear_failure(keys(config, "revoke", key_id), "already revoked")


def test_unlimited_is_the_default_and_can_be_named(config: Path, database_url: str) -> None:
    key_id = create(config, "--rpm", "unlimited", "--daily-tokens", "none")
    assert [(k.rpm, k.daily_tokens) for k in stored_keys(database_url)] == [(None, None)]
    row = listed_row(config, key_id)
    assert row.count("unlimited") == 2, row
