"""The ``hybrid`` command: one subcommand per pipeline stage, plus ``run`` for all of them.

Exit status: 0 when everything finished, 3 when the run finished but some catchments failed
(the summary and report say which and why), 2 for a problem the user can fix (bad config, data
or store: one line, no traceback), 130 when interrupted. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from hybrid.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HybridError

STAGES = {
    "prepare": "load the dataset and write the canonical catchment store (Parquet per catchment)",
    "pretrain": "pre-train the regional LSTM on the training catchments (Ray actor; GPU if any)",
    "encode": "encode every catchment with the LSTM (no head) and write features to Parquet",
    "baselines": "train the optional per-catchment LSTM baselines (Ray tasks)",
    "decode": "fit one random-forest decoder per catchment (Ray tasks), score it, and write "
              "the summary",
    "score": "score every catchment's predictions again (e.g. after adding a metric) and "
             "rewrite the summary, without refitting",
    "report": "write report.md and plots into the run folder from its summary",
    "run": "all of the above in order, each stage skipping what is already done",
    "check": "check a config against its data and store without writing or training anything",
}


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
    for name, help_text in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, help="run config (YAML)")
        p.add_argument("--store", help="override the config's store URL (path, file://, s3://)")
        p.add_argument("--run-id", help="override the config's run_id")
    predict = sub.add_parser(
        "predict", help="regional and hybrid predictions of a finished run for any period, "
                        "without refitting",
        description="Serve a finished run's encoder and kept forests for the days from --start "
                    "to --end (any dates the forcings cover; a period beyond the run's own days "
                    "re-reads the dataset, from --data-dir if given). Writes "
                    "predict/<start>_<end>/ in the run folder.")
    predict.add_argument("--config", required=True, help="run config (YAML) of a finished run")
    predict.add_argument("--store", help="override the config's store URL")
    predict.add_argument("--run-id", help="override the config's run_id")
    predict.add_argument("--start", required=True, type=_date, help="first day, YYYY-MM-DD")
    predict.add_argument("--end", required=True, type=_date, help="last day, YYYY-MM-DD")
    predict.add_argument("--data-dir", help="dataset folder holding the forcings of the period")
    export = sub.add_parser(
        "export", help="write a finished run's encoder as a reusable model folder",
        description="Copy the run's checkpoint and config into a model folder with a model card "
                    "written from the run's outputs; other runs reuse it with base_run.")
    export.add_argument("--config", required=True, help="run config (YAML) of a finished run")
    export.add_argument("--store", help="override the config's store URL")
    export.add_argument("--run-id", help="override the config's run_id")
    export.add_argument("--out", required=True, help="model folder to write (e.g. models/NAME)")
    metrics = sub.add_parser(
        "metrics", help="score simulated against observed streamflow from a CSV/Parquet file",
        description="Compute NSE, KGE (2009 and 2012), alpha/beta-NSE, r, RMSE, FHV/FMS/FLV and "
                    "peak timing for every simulated column against the observed one (per "
                    "gauge_id when the file has that column).")
    metrics.add_argument("file", help="CSV or Parquet file (any fsspec URL)")
    metrics.add_argument("--obs", default="observed", help="observed column (default: observed)")
    metrics.add_argument("--sim", nargs="+", help="simulated columns (default: all others)")
    return parser


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
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
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
    # Imported after the config is checked: it pulls in torch (seconds), and a typo in the
    # config should be reported at once.
    from hybrid import pipeline

    if args.command == "export":
        from hybrid.encoder.export import export_model

        command = f"hybrid run --config {args.config}"
        print(f"model: {export_model(cfg, os.path.abspath(args.out), command)}")
        return EXIT_OK
    if args.command == "check":
        from hybrid.stages.check import check

        check(cfg)
        return EXIT_OK
    if args.command == "run":
        outcome = pipeline.stage_run(cfg)
        print(f"report: {outcome.report}")
        if outcome.failed:
            print(f"finished with {len(outcome.failed)} failed catchment(s): "
                  f"{', '.join(outcome.failed[:10])}{' ...' if len(outcome.failed) > 10 else ''}"
                  " (reasons in the report); rerun to retry them", file=sys.stderr)
        return outcome.exit_code
    session = pipeline.Session.open(cfg, write=args.command != "report")
    try:
        if args.command == "predict":
            pipeline.stage_predict(cfg, args.start, args.end, args.data_dir, session)
            return EXIT_OK
        if args.command == "report":
            print(f"report: {pipeline.stage_report(cfg, session)}")
            return EXIT_OK
        result = getattr(pipeline, f"stage_{args.command}")(cfg, session)
    finally:
        session.close()
    return _exit_code(result)


def _exit_code(result) -> int:
    from hybrid.errors import EXIT_FAILURES

    failed = getattr(result, "failed", None)
    if failed is None and hasattr(result, "columns") and "status" in result:
        failed = (result["status"] == "failed").any()
    if isinstance(result, dict):
        failed = any(getattr(r, "failed", None) for r in result.values())
    return EXIT_FAILURES if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
