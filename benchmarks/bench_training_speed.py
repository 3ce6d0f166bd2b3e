"""Training throughput of the regional LSTM on this machine's CPU, per knob.

Forward + backward + Adam step on batches shaped like the 421-catchment CAMELS-US run (3
dynamic inputs + 19 static attributes), for hidden sizes, batch sizes, sequence layouts, torch
threads, bf16 autocast and torch.compile. Throughput is reported in *target-days per second*
(windows/s x days scored per window), the unit that matters when comparing many-to-one with
sequence-to-sequence training; BENCHMARKS.md turns the winners into full training runs judged
by validation NSE per minute (benchmarks/bench_recipes.py).

    python benchmarks/bench_training_speed.py --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import machine  # noqa: E402
from hybrid.encoder.losses import MaskedMSE  # noqa: E402
from hybrid.encoder.model import RegionalLSTM  # noqa: E402

N_DYNAMIC, N_STATIC = 3, 19


def step_rate(hidden: int, batch: int, seq: int, last_n: int, threads: int, bf16: bool,
              compiled: bool, seconds: float, repeats: int) -> tuple[float, list[float]]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = RegionalLSTM(N_DYNAMIC, N_STATIC, hidden_size=hidden)
    run = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = MaskedMSE()
    x_d = torch.randn(batch, seq, N_DYNAMIC)
    x_s = torch.randn(batch, N_STATIC)
    y = torch.randn(batch, last_n)

    def one() -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            y_hat = run(x_d, x_s)["y_hat"][:, -last_n:, 0]
        loss = loss_fn.mean(y_hat.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up (and compilation)
        one()
    rates = []
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            one()
            n += 1
        rates.append(n * batch * last_n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few configurations only")
    args = parser.parse_args()
    print(machine(), "| load average", os.getloadavg())
    layouts = [(365, 1), (365, 30), (730, 365)]
    grid = []
    for (seq, last_n), hidden in itertools.product(layouts, (64, 128, 256)):
        batch = 256 if seq == 365 else 32
        grid.append((hidden, batch, seq, last_n, 2, False, False))
    grid += [(64, 256, 365, 30, 1, False, False), (64, 32, 730, 365, 1, False, False),
             (64, 64, 730, 365, 2, False, False), (64, 16, 730, 365, 2, False, False),
             (128, 64, 730, 365, 2, False, False),
             (64, 32, 730, 365, 2, True, False), (128, 32, 730, 365, 2, True, False),
             (64, 32, 730, 365, 2, False, True)]
    if args.quick:
        grid = grid[:2]
    baseline = None
    print("hidden batch seq last_n threads bf16 compile | target-days/s (median) runs | ratio")
    for config in grid:
        try:
            median, runs = step_rate(*config, seconds=args.seconds, repeats=args.repeats)
        except Exception as err:  # noqa: BLE001 - e.g. compile unsupported here: say so
            print(*config, f"| failed: {type(err).__name__}: {str(err).splitlines()[0]}")
            continue
        baseline = baseline or median
        print(*config, f"| {median:,.0f} {[round(r) for r in runs]} | {median / baseline:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
