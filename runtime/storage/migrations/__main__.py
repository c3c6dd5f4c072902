"""Developer entry point: ``python -m runtime.storage.migrations revision -m MSG [--autogenerate URL]``."""

from __future__ import annotations

import argparse

from alembic import command

from runtime.storage.engine import make_engine
from runtime.storage.migrations import alembic_config


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.storage.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="write a new revision file")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", metavar="URL", help="diff the models against this (upgraded) database")
    args = parser.parse_args()
    config = alembic_config()
    if args.autogenerate:
        engine = make_engine(args.autogenerate)
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.revision(config, message=args.message, autogenerate=True)
        engine.dispose()
    else:
        command.revision(config, message=args.message)


if __name__ == "__main__":
    main()
