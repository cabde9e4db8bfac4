"""``medimg infer``: run an exported model on a file/folder or on a study in a PACS."""

from __future__ import annotations

import argparse
import sys

from medimg.data.errors import DataError

PACS_EXIT = 3
USAGE = """examples:
  medimg infer --model model.ts --input series_folder/ --output out/
  medimg infer --model model.ts --input image.nii.gz --output out/
  medimg infer --model model.ts --dicomweb http://127.0.0.1:8042/dicom-web \\
      --study 1.2.826.0.1... --output out/
exit status: 0 done (for --dicomweb: stored and confirmed), 2 bad input or model file,
3 PACS unreachable or the result was not stored."""


def add_infer_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``infer`` subcommand on the ``medimg`` parser."""
    infer = sub.add_parser(
        "infer",
        help="run an exported model on DICOM/NIfTI input or a PACS study",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    infer.add_argument("--model", required=True, help="exported model (.ts, .pt2, .onnx)")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="DICOM series folder or NIfTI file")
    source.add_argument("--dicomweb", help="DICOMweb root URL of a PACS")
    infer.add_argument("--study", help="StudyInstanceUID to run on (with --dicomweb)")
    infer.add_argument("--series", help="SeriesInstanceUID (default: largest image series)")
    infer.add_argument("--output", required=True, help="folder for result.json and results")
    infer.add_argument("--retries", type=int, default=3, help="attempts per request (PACS)")
    infer.add_argument("--backoff", type=float, default=0.5, help="first retry wait, seconds")
    infer.add_argument("--timeout", type=float, default=30.0, help="seconds per read (PACS)")
    infer.add_argument(
        "--deadline",
        type=float,
        help="seconds the whole PACS exchange may take (default: 5 x retries x 10 x timeout "
        "plus backoffs); a server trickling bytes is cut off here",
    )
    infer.add_argument(
        "--covariates",
        help="comma-separated covariate values in the card's order (nan = missing), "
        "for models that take clinical covariates",
    )
    infer.add_argument("--repair-tilt", action="store_true", help="accept gantry-tilted stacks")
    infer.set_defaults(run=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status (bad input raises DataError: status 2)."""
    if args.dicomweb:
        return _run_pacs(args)
    from medimg.deploy.infer import run_inference

    inference = run_inference(
        args.model,
        args.input,
        args.output,
        repair_tilt=args.repair_tilt,
        covariates=_covariates(args.covariates),
    )
    names = ", ".join(path.name for path in inference.files.values())
    print(f"medimg: wrote {names} to {args.output}")
    return 0


def _run_pacs(args: argparse.Namespace) -> int:
    from medimg.deploy.dicomweb import PacsError, RetryPolicy, infer_from_pacs

    if not args.study:
        raise DataError("--dicomweb needs --study <StudyInstanceUID>")
    try:
        retry = RetryPolicy(
            attempts=args.retries,
            backoff_s=args.backoff,
            timeout_s=args.timeout,
            deadline_s=args.deadline,
        )
        inference = infer_from_pacs(
            args.dicomweb,
            args.study,
            args.model,
            args.output,
            series=args.series,
            retry=retry,
            covariates=_covariates(args.covariates),
        )
    except (PacsError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        sys.stderr.write(f"medimg: error: {err}\n")
        return PACS_EXIT
    stored = inference.dicom
    print(
        f"medimg: stored {stored.SOPClassUID.name} {stored.SOPInstanceUID} in the study at "
        f"{inference.result['pacs']['server']} (confirmed by query); result.json in {args.output}"
    )
    return 0


def _covariates(text: str | None) -> list[float] | None:
    """``--covariates 61,nan,2`` as floats."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as err:
        raise DataError(
            f"--covariates must be comma-separated numbers or nan, got {text!r}"
        ) from err
