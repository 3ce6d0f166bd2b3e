"""The ``hybrid`` command: one subcommand per pipeline stage, plus ``run`` for all of them.

Exit status: 0 when everything finished, 3 when the run finished but some catchments failed
(the summary and report say which and why), 2 for a problem the user can fix (bad config, data
or store: one line, no traceback), 130 when interrupted. Anything else is a bug and keeps its
traceback (exit 1), with the credentials of any URL in it replaced by ``***``.
"""

from __future__ import annotations

import argparse
import os
import sys

from hybrid.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HybridError, redact
from hybrid.stages import STAGES

#: exit status of an unexpected error (a bug), as Python's own for an uncaught exception
EXIT_BUG = 1

#: commands beyond the registered stages (``hybrid.stages.STAGES``)
RUN_HELP = "all stages in order, each one skipping what is already done"


def _parser() -> argparse.ArgumentParser:
    from hybrid import __version__

    parser = argparse.ArgumentParser(
        prog="hybrid",
        description="Hybrid LSTM-encoder / random-forest-decoder streamflow models for many "
                    "catchments at once (Jahangir et al., 2026). Every stage reads and writes "
                    "<store>/<run_id>/ and can be rerun to resume. Exit status: 0 done, 3 done "
                    "with failed catchments, 2 bad config/data/store.",
    )
    parser.add_argument("--version", action="version", version=f"hybrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: stage.help for name, stage in STAGES.items() if name != "predict"}
    commands["run"] = RUN_HELP
    for name, help_text in commands.items():
        _run_options(sub.add_parser(name, help=help_text, description=help_text))
    predict = sub.add_parser(
        "predict", help=STAGES["predict"].help,
        description="Serve a finished run's encoder and kept forests for the days from --start "
                    "to --end (any dates the forcings cover; a period beyond the run's own days "
                    "re-reads the dataset, from --data-dir if given). Writes "
                    "predict/<start>_<end>/ in the run folder.")
    _run_options(predict, "run config (YAML) of a finished run")
    predict.add_argument("--start", required=True, type=_date, help="first day, YYYY-MM-DD")
    predict.add_argument("--end", required=True, type=_date, help="last day, YYYY-MM-DD")
    predict.add_argument("--data-dir", help="dataset folder holding the forcings of the period")
    export = sub.add_parser(
        "export", help="write a finished run's encoder as a reusable model folder",
        description="Copy the run's checkpoint and config into a model folder with a model card "
                    "written from the run's outputs; other runs reuse it with base_run.")
    _run_options(export, "run config (YAML) of a finished run")
    export.add_argument("--out", required=True, help="model folder to write (e.g. models/NAME)")
    export.add_argument("--snapshots", type=_epochs, default=[],
                        help="an ensemble of this run's epoch checkpoints, e.g. 7,11,17")
    export.add_argument("--members", nargs="+", default=[],
                        help="add the encoders of other finished runs or model folders (URLs) "
                             "as ensemble members; they must share this run's inputs and scaler")
    export.add_argument("--reproduce", type=_text_file,
                        help="a text file with the commands that made the "
                        "encoder, for the model card (default: the run's own command)")
    export.add_argument("--force", action="store_true",
                        help="write into a folder that is not empty, replacing its model files")
    metrics = sub.add_parser(
        "metrics", help="score simulated against observed streamflow from a CSV/Parquet file",
        description="Compute NSE, KGE (2009 and 2012), alpha/beta-NSE, r, RMSE, FHV/FMS/FLV and "
                    "peak timing for every simulated column against the observed one (per "
                    "gauge_id when the file has that column).")
    metrics.add_argument("file", help="CSV or Parquet file (any fsspec URL)")
    metrics.add_argument("--obs", default="observed", help="observed column (default: observed)")
    metrics.add_argument("--sim", nargs="+", help="simulated columns (default: all others)")
    return parser


def _run_options(parser: argparse.ArgumentParser, config_help: str = "run config (YAML)"
                 ) -> None:
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--store", help="override the config's store URL (path, file://, s3://)")
    parser.add_argument("--run-id", help="override the config's run_id")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the run's lock from a command that is gone (see the "
                             "error that names its holder)")


def _epochs(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 7,11,17, got {text!r}") from None


def _text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {err}") from None


def _date(text: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "metrics":
            from hybrid.evaluation.file_metrics import print_metrics

            print_metrics(args.file, args.obs, args.sim)
            return EXIT_OK
        return _run_stage(args)
    except HybridError as err:
        print(f"error: {redact(' '.join(str(err).split()))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: its traceback is kept, without any URL's credentials
        import traceback

        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return EXIT_BUG
    finally:
        from hybrid.logs import detach_run_logs

        detach_run_logs()


def _run_stage(args: argparse.Namespace) -> int:
    from hybrid.config import load_config

    overrides = {}
    if args.store:
        overrides["store"] = args.store if "://" in args.store else os.path.abspath(args.store)
    if args.run_id:
        overrides["run_id"] = args.run_id
    cfg = load_config(args.config, overrides)
    # Stages are imported after the config is checked: they pull in torch (seconds), and a typo
    # in the config should be reported at once.
    if args.command == "export":
        from hybrid.encoder.export import export_model

        command = f"hybrid run --config {args.config}"
        if args.reproduce:
            command = args.reproduce.rstrip("\n")
        out = export_model(cfg, os.path.abspath(args.out), command, args.force, args.snapshots,
                           [m if "://" in m else os.path.abspath(m) for m in args.members])
        print(f"model: {out}")
        return EXIT_OK
    if args.command == "run":
        from hybrid.stages import run_all

        outcome = run_all(cfg, break_lock=args.break_lock)
        print(f"report: {outcome.path}")
        _say_failed(outcome.failed)
        return outcome.exit_code
    return _one_stage(args, cfg)


def _one_stage(args: argparse.Namespace, cfg) -> int:
    stage = STAGES[args.command]
    if args.command == "check":
        return stage.run(cfg).exit_code
    from hybrid.execution.session import Session

    session = Session.open(cfg, write=stage.writes, existing=stage.needs_run,
                           break_lock=args.break_lock, command=f"hybrid {args.command}")
    try:
        if args.command == "predict":
            outcome = stage.run(cfg, args.start, args.end, args.data_dir, session)
        else:
            outcome = stage.run(cfg, session)
    finally:
        session.close()
    if args.command == "report":
        print(f"report: {outcome.path}")
    return outcome.exit_code


def _say_failed(failed: list[str]) -> None:
    if failed:
        print(f"finished with {len(failed)} failed catchment(s): "
              f"{', '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}"
              " (reasons in the report); rerun to retry them", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
