"""Entrypoint for ``ray job submit``: the whole pipeline (or one stage) for a run config.

    ray job submit --working-dir . -- python jobs/run_pipeline.py --config configs/demo.yml

The working directory is shipped to the cluster, so the package is importable from it even where
it is not installed; its dependencies must be installed on the nodes (see infra/Dockerfile).
``ray job submit`` runs ``python`` from the PATH the cluster was started with, which need not be
the interpreter that has the dependencies: this script says so plainly instead of failing on an
import deep inside Ray.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the shipped working dir holds the package


def _check_interpreter() -> None:
    missing = []
    for module in ("ray", "torch", "sklearn", "pyarrow", "pandas", "s3fs"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        sys.exit(
            f"error: {sys.executable} cannot import {', '.join(missing)}. `ray job submit` runs "
            "the `python` on the PATH the cluster was started with; start the cluster from the "
            "environment that has this package installed, or give the entrypoint that "
            "interpreter's full path (e.g. -- /opt/venv/bin/python jobs/run_pipeline.py ...)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config (YAML)")
    from hybrid.stages import STAGES  # the registry: no stage list to keep in step here

    parser.add_argument("--stage", default="run",
                        choices=[*(s for s in STAGES if s != "predict"), "run"])
    parser.add_argument("--store", help="override the config's store URL")
    parser.add_argument("--run-id", help="override the config's run_id")
    args = parser.parse_args()
    _check_interpreter()
    from hybrid.cli import main as cli_main

    argv = [args.stage, "--config", args.config]
    if args.store:
        argv += ["--store", args.store]
    if args.run_id:
        argv += ["--run-id", args.run_id]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
