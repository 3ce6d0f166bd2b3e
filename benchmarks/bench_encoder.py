"""Training throughput, and exact vs streaming encoding, on real CAMELS-US catchments.

    python benchmarks/bench_encoder.py --catchments 40 --hidden 64 --train-minutes 10

1. Prepares N real catchments (Caravan layout) and trains a regional LSTM for a fixed wall-time
   budget (seq_length 365, batch 128; the run is kept, so a rerun reuses the model).
2. Training throughput: windows/s over fixed batches (median of 3 runs of 20 batches).
3. Encodes every catchment with both encoders, timing each (median of 3 runs on 5 catchments),
   and compares features (max |difference|) and the hybrid NSE each gives (RF per catchment,
   fitted on the training period, scored on the test period).
4. Times the encode stage's own unit of work (``hybrid.stages.encode.encode_one``: read the
   partition, the configured encoder, the regional head on the test days, the Parquet write) on
   the same 5 catchments, against the bare encoder pass, in a scratch store (a ``--run`` stays
   as it was).
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import torch
from _common import load, machine, model_arguments, runs, scratch_store, timed, trained_run

from hybrid.data.catalog import load_attributes, load_catchment
from hybrid.data.windows import CatchmentArrays, WindowSampler
from hybrid.encoder.features import encode_exact, encode_streaming, encoded_days
from hybrid.encoder.losses import MaskedMSE
from hybrid.encoder.trainer import hparams
from hybrid.evaluation.metrics import nse
from hybrid.execution.runner import Context
from hybrid.stages.decode import fit_predict
from hybrid.stages.encode import encode_one, setup_encoder
from hybrid.store import layout


def main() -> None:
    parser = argparse.ArgumentParser()
    model_arguments(parser)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, store, trained, gauges = trained_run(args)
    print(machine())
    print(f"model: hidden {trained.hidden_size}, best epoch {trained.best_epoch}, "
          f"{len(trained.history)} epochs in {sum(h['seconds'] for h in trained.history):.0f} s")

    attributes = load_attributes(store)
    statics = trained.scaler.static_attributes
    arrays = {g: CatchmentArrays.build(g, load_catchment(store, g),
                                       attributes.loc[g, statics].to_numpy(), trained.scaler)
              for g in gauges}
    seq = cfg.seq_length

    # --- training throughput on fixed batches (a fresh copy of the model, same settings)
    # the model's own training catchments (any drawn ones if the draw holds none of them)
    fitted = [arrays[g] for g in gauges if g in trained.split["train"]] or list(arrays.values())
    sampler = WindowSampler(fitted, seq, 1, cfg.train_start_date, cfg.train_end_date)
    loss_fn = MaskedMSE()
    model = type(trained.model).from_hparams(hparams(cfg, trained.scaler))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(sampler), 128, replace=False) for _ in range(20)]

    def train_batches():
        model.train()
        for idx in batches:
            x_d, x_s, y = sampler.batch(idx)
            loss = loss_fn.mean(model(x_d, x_s)["y_hat"][:, -1:, 0], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train_s, train_all, _ = timed(train_batches, 3)
    print(f"training: {20 * 128 / train_s:.0f} windows/s (median of 3 x 20 batches of 128, "
          f"seq_length {seq}; runs {[round(20 * 128 / t) for t in train_all]})")

    # --- encoding throughput: 3 repeats on 5 catchments
    sample = gauges[:5]
    days = {g: encoded_days(cfg, arrays[g])[0] for g in gauges}
    n_days = sum(len(days[g]) for g in sample)
    exact_s, exact_all, _ = timed(lambda: [encode_exact(trained.model, arrays[g], days[g], seq)
                                           for g in sample], 3)
    stream_s, stream_all, _ = timed(lambda: [encode_streaming(trained.model, arrays[g], days[g],
                                                              seq) for g in sample], 3)
    print(f"exact encoder: {n_days / exact_s:.0f} windows/s "
          f"({exact_s / len(sample):.2f} s per catchment of ~{n_days // len(sample)} days)")
    print(f"streaming encoder: {n_days / stream_s:.0f} days/s "
          f"({stream_s / len(sample) * 1000:.0f} ms per catchment); "
          f"streaming / exact speed-up {exact_s / stream_s:.0f}x")
    print(f"  exact: {runs(exact_all)}; streaming: {runs(stream_all, 3)} "
          f"({len(sample)} catchments)")

    # --- the encode stage's unit of work, against the bare pass of the configured encoder
    scratch = scratch_store(store, [layout.ATTRIBUTES] + [
        layout.partition_key(layout.CATCHMENTS, g) for g in sample])
    context = Context.of(scratch, cfg)
    state = {"node_id": "local", **setup_encoder(context, trained)}
    unit_s, unit_all, _ = timed(lambda: [encode_one(context, state, g) for g in sample], 3)
    bare_s = stream_s if cfg.encoder == "streaming" else exact_s
    print(f"encode stage unit (encode_one, encoder {cfg.encoder!r}: read + features + regional "
          f"head + Parquet write): {unit_s / len(sample):.2f} s per catchment ({runs(unit_all)} "
          f"for {len(sample)}), {unit_s / bare_s:.1f}x the bare {cfg.encoder} pass")
    shutil.rmtree(scratch.root)

    # --- features and hybrid skill of each encoder, every catchment
    rows = []
    started = time.perf_counter()
    for g in gauges:
        idx, labels = encoded_days(cfg, arrays[g])
        ex = encode_exact(trained.model, arrays[g], idx, seq)
        st = encode_streaming(trained.model, arrays[g], idx, seq)
        obs = load_catchment(store, g)[cfg.target].to_numpy(np.float64)[idx]
        train, test = labels == "train", labels == "test"
        scores = []
        for feats in (ex, st):
            pred, _, _ = fit_predict(feats[train], obs[train], feats[test], cfg, n_jobs=2)
            scores.append(nse(obs[test], pred))
        rows.append((g, float(np.abs(ex - st).max()), *scores,
                     g in trained.split["train"]))
    diffs = np.array([r[1] for r in rows])
    nse_ex = np.array([r[2] for r in rows])
    nse_st = np.array([r[3] for r in rows])
    print(f"feature |exact - streaming|: median {np.median(diffs):.2e}, max {diffs.max():.2e}; "
          f"equal to 1e-4 on {(diffs < 1e-4).sum()} of {len(rows)} catchments")
    print(f"hybrid NSE: exact median {np.median(nse_ex):.3f}, streaming median "
          f"{np.median(nse_st):.3f}, max |difference| {np.abs(nse_ex - nse_st).max():.3f} "
          f"({time.perf_counter() - started:.0f} s for both encoders + 2 RF per catchment)")
    worst = sorted(rows, key=lambda r: -r[1])[:4]
    for g, d, a, b, in_train in worst:
        print(f"  largest feature difference: {g} max {d:.3f}, NSE exact {a:.3f} "
              f"streaming {b:.3f} ({'in' if in_train else 'out of'} training)")
    print(f"after the measurement: {load()}")


if __name__ == "__main__":
    main()
