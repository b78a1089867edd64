"""``python -m coretex.kernel [--listen HOST:PORT]``: run the safety kernel without the CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from coretex.errors import ConfigError
from coretex.kernel.server import serve
from coretex.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coretex.kernel", description=__doc__)
    parser.add_argument("--listen", help="HOST:PORT to listen on (default: CORETEX_KERNEL_ADDR)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = load_settings()
    except ConfigError as exc:
        logging.getLogger("coretex.kernel").error("kernel not started: %s", exc)
        raise SystemExit(1) from exc
    serve(settings, args.listen or settings.kernel_addr)


if __name__ == "__main__":
    main()
