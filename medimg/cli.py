"""The ``medimg`` command: data utilities beside the Hydra entry points (train, evaluate)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medimg.data.errors import DataError
from medimg.deploy.commands import add_infer_parser


def _synth(args: argparse.Namespace) -> None:
    from medimg.data.synthetic import make_synthetic_ct

    paths = make_synthetic_ct(args.root, seed=args.seed)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))


def _check(args: argparse.Namespace) -> None:
    from medimg.data.manifest import load_manifest
    from medimg.data.preflight import check_cases

    frame = load_manifest(args.manifest, args.task)
    check_cases(frame, args.manifest, args.task, workers=args.workers, repair_tilt=args.repair_tilt)
    print(f"{args.manifest}: {len(frame)} cases OK")


def _scan_outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The table and its incremental index: where the user says, never inside the scanned tree
    unasked (both hold the archive's headers and paths)."""
    root = Path(args.root).resolve()
    output = Path(args.output or "series.csv").resolve()
    index = Path(args.index).resolve() if args.index else output.with_suffix(".index.json")
    if args.output is None and output.is_relative_to(root):
        raise DataError(
            f"{output}: the default output would be written inside the scanned tree {root}; "
            "pass -o/--output with a path outside it (or inside it, if you mean to)"
        )
    return output, index


def _scan(args: argparse.Namespace) -> None:
    from medimg.data.scan import scan_tree, write_scan

    output, index = _scan_outputs(args)
    frame = scan_tree(args.root, index_path=index, workers=args.workers)
    write_scan(frame, output)
    info = frame.attrs.get("scan", {})
    bad = int((frame["status"] != "ok").sum()) if len(frame) else 0
    print(
        f"{output}: {len(frame)} series ({bad} with problems) from {info.get('files')} files "
        f"({info.get('read')} read, {info.get('reused')} unchanged) in {info.get('seconds')} s"
    )


def main(argv: list[str] | None = None) -> int:
    """``medimg synth|check|scan|infer``; exit status 2 with one clear message on bad input."""
    parser = argparse.ArgumentParser(prog="medimg")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the built-in synthetic CT dataset")
    synth.add_argument("root")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_synth)
    check = sub.add_parser(
        "check", help="preflight a manifest: read every case, report all problems"
    )
    check.add_argument("manifest")
    check.add_argument(
        "--task", default="classification", choices=["classification", "segmentation"]
    )
    check.add_argument("--workers", type=int, default=2)
    check.add_argument("--repair-tilt", action="store_true", help="accept gantry-tilted stacks")
    check.set_defaults(run=_check)
    scan = sub.add_parser("scan", help="index a DICOM tree by headers: one row per series")
    scan.add_argument("root")
    scan.add_argument(
        "-o", "--output", help="the series table (default: series.csv in the current folder)"
    )
    scan.add_argument(
        "--index",
        help="the incremental header index (default: beside the output, <output>.index.json); "
        "a re-scan reads only new or changed files",
    )
    scan.add_argument("--workers", type=int, default=2)
    scan.set_defaults(run=_scan)
    add_infer_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        status = args.run(args)
    except (DataError, FileNotFoundError, NotADirectoryError) as err:
        sys.stderr.write(f"medimg: error: {err}\n")
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
