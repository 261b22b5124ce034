"""`python -m manifests inspect DIR [--html [PATH]]`: what a curation run produced.
`python -m manifests import FILE --output DIR [--root DIR] [--scenes N]`: official datasets to manifests.
`python -m manifests compact DIR`: merge the many small part files into one large file per table.
`python -m manifests remove DIR --video ID_OR_PATH ...`: take videos out of every table at once.
`python -m manifests columns`: what every column of every table means (docs/columns.md)."""

from __future__ import annotations

import argparse
import sys

from manifests.inspect import check_manifest_dir, html_report, text_report
from manifests.io import ManifestError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m manifests")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="counts, hours, shot lengths and failures of a manifest directory")
    inspect.add_argument("manifest_dir")
    inspect.add_argument(
        "--html", nargs="?", const="", default=None, metavar="PATH", help="also write a page (default DIR/index.html)"
    )
    inspect.add_argument("--no-previews", action="store_true",
                         help="page without the shots' playable previews (written once to DIR/keyframes/previews)")  # fmt: skip
    importer = commands.add_parser(
        "import", help="turn the official pretrain.csv / sft.json (or a path,caption CSV) into manifests"
    )
    importer.add_argument("source", help="pretrain.csv, sft.json, or a CSV with path,caption columns")
    importer.add_argument("--output", required=True, help="manifest directory to write (training's data.manifest)")
    importer.add_argument("--root", help="folder that the clip paths in the file (`path` in a CSV, `url` in sft.json) "
                          "start from (default: the file's folder)")  # fmt: skip
    importer.add_argument("--scenes", type=int, default=3, help="shots per SFT combination (default: %(default)s)")
    importer.add_argument("--allow-outside-root", action="store_true",
                          help="import files the source names outside --root (../ or absolute paths)")  # fmt: skip
    compact = commands.add_parser("compact", help="merge a manifest's small part files into one large file per table "
                                  "(atomic, idempotent, safe while others read)")  # fmt: skip
    compact.add_argument("manifest_dir")
    remove = commands.add_parser("remove", help="take videos out of a manifest: their rows in every table, at once, "
                                 "and their keyframes")  # fmt: skip
    remove.add_argument("manifest_dir")
    remove.add_argument("--video", nargs="+", action="extend", required=True, metavar="ID_OR_PATH",
                        help="a video_id, or a source_path as the videos table records it (repeatable)")  # fmt: skip
    commands.add_parser("columns", help="print what every column of every table means, as Markdown")
    args = parser.parse_args(argv)
    if args.command == "columns":
        from manifests.schema import columns_markdown

        print(columns_markdown(), end="")
        return 0
    if args.command == "remove":
        return remove_command(args.manifest_dir, args.video)
    if args.command == "compact":
        from manifests.compact import compact as run_compact
        from manifests.lock import OutputLocked

        try:
            print("\n".join(run_compact(args.manifest_dir).lines()))
        except (ManifestError, OutputLocked) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    if args.command == "import":
        from manifests.importer import ImportFormatError, import_dataset

        try:
            result = import_dataset(args.source, args.output, args.root, args.scenes, args.allow_outside_root)
        except ImportFormatError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(result.lines()))
        return 0 if result.shots else 1
    try:
        check_manifest_dir(args.manifest_dir)
        print(text_report(args.manifest_dir))
        if args.html is not None:
            print(f"wrote {html_report(args.manifest_dir, args.html or None, with_previews=not args.no_previews)}")
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def remove_command(manifest_dir: str, selectors: list[str]) -> int:
    from manifests.lock import OutputLock, OutputLocked
    from manifests.remove import remove_videos

    try:
        check_manifest_dir(manifest_dir)
        with OutputLock(manifest_dir, "manifests remove"):
            result = remove_videos(manifest_dir, selectors)
    except (ManifestError, OutputLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(result.lines()))
    return 1 if result.unknown else 0


if __name__ == "__main__":
    sys.exit(main())
