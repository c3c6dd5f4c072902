"""``python -m workers.whatsapp [--config FILE]``: the reply worker, like ``plugway worker``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.config import ConfigError, load_settings
from workers.whatsapp.cli import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.whatsapp")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    asyncio.run(run_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
