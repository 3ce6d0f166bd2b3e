"""The ``hybrid`` command: one subcommand per pipeline stage, plus ``run`` for all of them.

Errors the user can fix (``HybridError``) print as one line and exit with status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hybrid.errors import HybridError

STAGES = {
    "prepare": "load the dataset and write the canonical catchment store (Parquet per catchment)",
    "pretrain": "pre-train the regional LSTM on the training catchments (Ray actor; GPU if any)",
    "encode": "encode every catchment with the LSTM (no head) and write features to Parquet",
    "decode": "fit one random-forest decoder per catchment as Ray tasks; write predictions "
              "and metrics",
    "report": "write the summary tables, report.md and plots into the run folder",
    "run": "all of the above in order, each stage skipping what is already done",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid",
        description="Hybrid LSTM-encoder / random-forest-decoder streamflow models for many "
                    "catchments at once (Jahangir et al., 2026). Every stage reads and writes "
                    "<store>/<run_id>/ and can be rerun to resume.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, help="run config (YAML)")
        p.add_argument("--store", help="override the config's store URL (path, file://, s3://)")
        p.add_argument("--run-id", help="override the config's run_id")
    metrics = sub.add_parser(
        "metrics", help="score simulated against observed streamflow from a CSV/Parquet file",
        description="Compute NSE, KGE (2009 and 2012), alpha/beta-NSE, r, RMSE, FHV/FMS/FLV and "
                    "peak timing for every simulated column against the observed one (per "
                    "gauge_id when the file has that column).")
    metrics.add_argument("file", help="CSV or Parquet file (any fsspec URL)")
    metrics.add_argument("--obs", default="observed", help="observed column (default: observed)")
    metrics.add_argument("--sim", nargs="+", help="simulated columns (default: all others)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "metrics":
            from hybrid.metrics_cli import print_metrics

            print_metrics(args.file, args.obs, args.sim)
            return 0
        _run_stage(args)
        return 0
    except HybridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130


def _run_stage(args: argparse.Namespace) -> None:
    from hybrid.config import load_config

    overrides = {}
    if args.store:
        overrides["store"] = args.store
    if args.run_id:
        overrides["run_id"] = args.run_id
    cfg = load_config(args.config, overrides)
    # Imported after the config is checked: it pulls in Ray and torch (seconds), and a typo in
    # the config should be reported at once.
    from hybrid import pipeline

    stage: Callable = getattr(pipeline, f"stage_{args.command}")
    result = stage(cfg)
    if args.command in ("run", "report"):
        print(f"report: {result}")


if __name__ == "__main__":
    sys.exit(main())
