"""Many rows into one table at once, in the caller's transaction.

The batched writers (usage records, the request log) write one row per request.
On PostgreSQL they go in with one ``COPY``: an executemany of INSERTs cost about
four times the CPU per row in the gateway's writer thread, and more in the
database. On SQLite, the driver's own executemany of one plain INSERT, without
SQLAlchemy's per-row statement machinery. Either way the values are converted
as SQLAlchemy would (an aware datetime made UTC, a datetime made SQLite's text);
rows that differ in their columns, or that leave out a column with a default,
take SQLAlchemy's INSERT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Table, insert
from sqlalchemy.exc import DBAPIError, StatementError

Processor = Callable[[Any], Any] | None


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same columns) into ``table``, raising what an INSERT would."""
    if not rows:
        return
    columns = list(rows[0])
    dialect = connection.dialect
    processors = _processors(connection, table, columns, rows) if dialect.driver in ("psycopg", "pysqlite") else None
    if processors is None:
        connection.execute(insert(table), list(rows))
        return
    converted = [(name, process) for name, process in zip(columns, processors, strict=True)]
    if dialect.driver == "pysqlite":
        # The driver's executemany of one plain statement, values converted as SQLAlchemy would.
        quote = dialect.identifier_preparer.quote
        plain = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})"
        try:
            values = [tuple(row[name] if process is None else process(row[name]) for name, process in converted) for row in rows]
        except (TypeError, ValueError) as exc:
            raise StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", None, None, exc) from exc
        connection.exec_driver_sql(plain, values)
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    driver_connection = connection.connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                # SQLAlchemy's own conversions (an aware datetime made UTC, say), as an INSERT applies them.
                copy.write_row([row[name] if process is None else process(row[name]) for name, process in converted])
    except psycopg.Error as exc:
        # The exception an INSERT raises (DataError, IntegrityError, OperationalError...): callers
        # tell a refused row from an unwritable database by it.
        raise DBAPIError.instance(statement.as_string(driver_connection), None, exc, psycopg.Error) from exc
    except (TypeError, ValueError) as exc:
        raise StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", None, None, exc) from exc


def _processors(
    connection: Connection, table: Table, columns: list[str], rows: Sequence[Mapping[str, Any]]
) -> list[Processor] | None:
    """Each column's value conversion, or None when writing the values as given would not do what
    SQLAlchemy's INSERT does:
    a name that is not a column, rows that differ in their columns, or a column left out that
    SQLAlchemy would fill in (a default)."""
    named = set(columns)
    if not named <= set(table.columns.keys()):
        return None
    for column in table.columns:
        if column.name not in named and column.default is not None and not column.primary_key:
            return None
    if not all(row.keys() == named for row in rows):
        return None
    dialect = connection.dialect
    return [table.columns[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]
