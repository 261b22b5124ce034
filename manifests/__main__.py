"""`python -m manifests inspect DIR [--html [PATH]]`: what a curation run produced."""

from __future__ import annotations

import argparse
import sys

from manifests.inspect import html_report, text_report
from manifests.io import ManifestError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m manifests")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="counts, hours, shot lengths and failures of a manifest directory")
    inspect.add_argument("manifest_dir")
    inspect.add_argument(
        "--html", nargs="?", const="", default=None, metavar="PATH", help="also write a page (default DIR/index.html)"
    )
    args = parser.parse_args(argv)
    try:
        print(text_report(args.manifest_dir))
        if args.html is not None:
            print(f"wrote {html_report(args.manifest_dir, args.html or None)}")
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
