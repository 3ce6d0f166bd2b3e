"""The fine-tuning stage: a pre-trained encoder applied to N catchments, end to end.

Given a finished run or a shipped model folder (``--run``), a scratch run with ``base_run``
pointing at it is made over the first N of the 421 CAMELS-US catchments in
``../shared/data/caravan``; prepare and the adoption of the encoder are not timed; then encode,
decode (fit + predict + score) and the summary are timed on local Ray with this machine's
cores, as ``hybrid run`` does them.

    python benchmarks/bench_finetune.py --run models/camels-us-s2s-h64 --catchments 421

The last line is ``finetune N catchments: T s (encode A s, decode B s, summary C s), median
hybrid NSE X``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import caravan_gauges, machine, require_caravan  # noqa: E402


def scratch_config(base: str, gauges: list[str], store: str, overrides: dict):
    from hybrid.config import config_from_dict
    from hybrid.encoder.base_run import read_base

    probe = config_from_dict({"run_id": "probe", "base_run": base})
    final, _ = read_base(probe)
    data = dict(final["config"])
    data.update(run_id="finetune-bench", store=store, base_run=base, basins=gauges,
                dataset="caravan", data_dir=str(require_caravan()), storage_options={},
                resources={"executor": "ray"})
    for key, value in overrides.items():  # a block (decoder, baselines) changes key by key
        both = isinstance(value, dict) and isinstance(data.get(key), dict)
        data[key] = {**data[key], **value} if both else value
    return config_from_dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="finished run folder or models/<name>")
    parser.add_argument("--catchments", type=int, default=421)
    parser.add_argument("--decoder", help="decoder params as JSON, e.g. '{\"n_estimators\": 50}'")
    parser.add_argument("--fit-period", choices=["train", "train_validation"],
                        help="the decoder's fit_period (default: the base run's)")
    parser.add_argument("--encode-only", action="store_true",
                        help="stop after encoding (to compare --encode-on tasks and actor)")
    parser.add_argument("--keep", help="keep the scratch run in this folder")
    parser.add_argument("--encode-on", choices=["tasks", "actor"], default="tasks",
                        help="encode as tasks fanned out like the decoders (the default), or "
                             "every catchment through the one encoder actor (the old way)")
    args = parser.parse_args()
    import json

    from hybrid.execution.session import Session
    from hybrid.stages import decode, encode, prepare, pretrain
    from hybrid.store import layout
    from hybrid.store.runs import read_timings

    print(machine(), "| load average", os.getloadavg(), flush=True)
    if args.encode_on == "actor":
        import dataclasses

        real_stage = encode.encode_stage
        encode.encode_stage = lambda *a: dataclasses.replace(real_stage(*a), role="encoder")
    gauges = caravan_gauges(require_caravan())[:args.catchments]
    overrides = {}
    decoder = {}
    if args.decoder:
        decoder["params"] = json.loads(args.decoder)
    if args.fit_period:
        decoder["fit_period"] = args.fit_period
    if decoder:
        overrides["decoder"] = decoder
    with tempfile.TemporaryDirectory() as scratch:
        store = args.keep or scratch
        cfg = scratch_config(os.path.abspath(args.run), gauges, store, overrides)
        if args.keep:  # the kept run can be reported and exported like any other
            config = os.path.join(args.keep, f"{cfg.run_id}.yml")
            with open(config, "w") as f:
                f.write(cfg.to_yaml())
            print(f"config of the kept run: {config}")
        session = Session.open(cfg)
        try:
            prepare.run(cfg, session)
            pretrain.run(cfg, session)
            session.real_executor()  # Ray started before the clock
            started = time.perf_counter()
            encode.run(cfg, session)
            encoded = time.perf_counter()
            if args.encode_only:
                print(f"encode {len(gauges)} catchments on {args.encode_on}: "
                      f"{encoded - started:.1f} s")
                return
            summary = decode.run(cfg, session).summary
            finished = time.perf_counter()
        finally:
            session.close()
        timings = read_timings(session.store)
        fitting = timings.get("decode", {}).get("seconds", 0) \
            + timings.get("score", {}).get("seconds", 0)
        encode_seconds = encoded - started
        summary_seconds = (finished - encoded) - fitting
        hybrid = summary[(summary.model == "hybrid") & (summary.status == "done")]
        regional = summary[(summary.model == "regional") & (summary.status == "done")]
        forests = session.store.sizes(layout.DECODERS)
        print(f"regional median NSE {regional.nse.median():.3f}, forests kept: "
              f"{sum(forests.values()) / 2**20:.1f} MiB in total, "
              f"{sorted(forests.values())[len(forests) // 2] / 2**20:.2f} MiB median")
        print(f"finetune {len(gauges)} catchments: {finished - started:.0f} s (encode "
              f"{encode_seconds:.0f} s, decode {fitting:.0f} s, summary {summary_seconds:.0f} s), "
              f"median hybrid NSE {hybrid.nse.median():.3f}")


if __name__ == "__main__":
    main()
