"""The ``medimg`` command: small utilities around the Hydra entry points."""

from __future__ import annotations

import argparse
import logging
import sys

from medimg.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    """``medimg synth ROOT`` builds the built-in dataset; ``medimg check MANIFEST`` preflights one."""
    parser = argparse.ArgumentParser(prog="medimg")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the built-in synthetic CT dataset")
    synth.add_argument("root")
    synth.add_argument("--seed", type=int, default=0)
    check = sub.add_parser("check", help="preflight-check a manifest without training")
    check.add_argument("manifest")
    check.add_argument(
        "--task", default="classification", choices=["classification", "segmentation"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "synth":
            from medimg.data.synthetic import make_synthetic_ct

            paths = make_synthetic_ct(args.root, seed=args.seed)
            print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        else:
            from medimg.data.manifest import load_manifest

            frame = load_manifest(args.manifest, args.task)
            print(f"{args.manifest}: {len(frame)} cases OK")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
