"""``hybrid export``: a finished run's encoder as a model folder others can reuse (``base_run``).

The folder has the two keys a ``base_run`` reads, ``config.yml`` and ``checkpoints/final.pt``
(weights, scaler, input lists, the catchment split and the training history; plain tensors and
data, so ``torch.load(weights_only=True)`` reads it), plus ``training_catchments.txt`` and a
``MODEL_CARD.md`` written from the run's own outputs: data, periods, skill, time, hardware and
the command that reproduces it. Nothing in it is typed by hand.
"""

from __future__ import annotations

import datetime as dt
import platform

import pandas as pd
import yaml

from hybrid.config import Config
from hybrid.encoder.base_run import MODEL_KEYS
from hybrid.encoder.checkpoints import (
    epochs,
    load_object,
    object_bytes,
    refuse_non_finite,
    weights_of,
)
from hybrid.encoder.ensemble import combine, snapshot, trainings
from hybrid.errors import StoreError
from hybrid.store import layout
from hybrid.store.provenance import provenance, sha256
from hybrid.store.runs import read_timings, require_run, run_store, without_secrets
from hybrid.store.storage import Store, open_store

#: keys of the run's config that describe where it ran, not the model: left out of the card's
#: config so a reuser's own store and data folder are not overridden by ours
_LOCAL = ("store", "storage_options", "data_dir", "basin_file", "base_run", "resources",
          "run_id")


def export_model(cfg: Config, out_url: str, command: str = "", force: bool = False,
                 snapshots: list[int] = (), members: list[str] = ()) -> str:
    """Write the model folder; a folder that already holds something is refused unless
    ``force`` (its model files are then replaced), so one export never silently replaces
    another model's card and weights. ``snapshots`` (epochs of this run) and ``members`` (other
    runs or model folders) make it an ensemble (``hybrid.encoder.ensemble``)."""
    run = run_store(cfg)
    require_run(cfg, run)
    for key in (layout.FINAL, layout.SUMMARY):
        if not run.exists(key):
            raise StoreError(f"{run.uri(key)} not found: export a finished run")
    out = open_store(out_url)
    present = out.listdir("")
    if present and not force:
        raise StoreError(f"{out.uri()} is not empty ({len(present)} entries, e.g. "
                         f"{present[0]!r}): choose another --out, or pass --force to "
                         "replace the model in it")
    data = run.read_bytes(layout.FINAL)
    final = load_object(run, layout.FINAL, data)
    if snapshots or members:
        final = ensemble_final(run, final, cfg.run_id, list(snapshots),
                               [open_store(m, cfg.storage_options) for m in members])
        data = object_bytes(final)
    for weights in weights_of(final):
        refuse_non_finite(weights, run.uri(layout.FINAL))
    out.write_bytes(layout.FINAL, data)
    model_config = {k: v for k, v in without_secrets(cfg.to_dict()).items() if k not in _LOCAL}
    # the model's own settings as it was trained (a run that reused it may not repeat them)
    trained = final.get("config") or {}
    model_config.update({k: trained[k] for k in MODEL_KEYS if k in trained})
    model_config["run_id"] = cfg.run_id
    out.write_text(layout.CONFIG, yaml.safe_dump(model_config, sort_keys=False))
    train = final["split"]["train"]
    out.write_text("training_catchments.txt", "\n".join(train) + "\n")
    name = out_url.rstrip("/").rsplit("/", 1)[-1]
    out.write_text("MODEL_CARD.md", model_card(run, cfg, final, sha256(data), command, name))
    return out.uri()


def _medians(summary: pd.DataFrame) -> list[str]:
    done = summary[summary.status == "done"]
    rows = ["| group | catchments | regional NSE | hybrid NSE | regional KGE-2012 | "
            "hybrid KGE-2012 |", "|---|---|---|---|---|---|"]
    groups = [("all", done), ("in the encoder's training set", done[done.in_training]),
              ("out of training (new locations)", done[~done.in_training])]
    for name, part in groups:
        med = part.groupby("model")[["nse", "kge_2012"]].median()
        if not {"regional", "hybrid"} <= set(med.index):
            continue
        rows.append(f"| {name} | {part.gauge_id.nunique()} | {med.loc['regional', 'nse']:.3f} | "
                    f"{med.loc['hybrid', 'nse']:.3f} | {med.loc['regional', 'kge_2012']:.3f} | "
                    f"{med.loc['hybrid', 'kge_2012']:.3f} |")
    return rows


def _at_best(history: pd.DataFrame, best: int | None, column: str = "validation_nse") -> float:
    row = history[history["epoch"] == best]
    return float(row[column].iloc[0]) if len(row) and column in row else float("nan")


def _picked_by(history: pd.DataFrame, best: int | None) -> str:
    """What the epoch in use is best at, read from the history itself (not from the config:
    a snapshot or an exported epoch may have been chosen after training)."""
    spatial = "spatial_validation_nse" in history
    prefix, whose = ("spatial_", "catchments held out of training") if spatial \
        else ("", "training catchments")
    for key, lowest, what in (("validation_loss", True, "lowest validation loss"),
                              ("validation_nse", False, "highest median validation NSE")):
        column = history.get(prefix + key)
        if column is None or not column.notna().any():
            continue
        pick = column.idxmin() if lowest else column.idxmax()
        if history.loc[pick, "epoch"] == best:
            return f" (the {what} of the {whose})"
    return ""


def _best_line(history: pd.DataFrame, best: int | None) -> str:
    """The epoch used and both validation scores there: the training catchments' validation
    years, and (with ``validation_basin_fraction``) the held-out catchments; and what it was
    best at, when it was best at something."""
    spatial = "spatial_validation_nse" in history
    why = _picked_by(history, best) if len(history) else ""
    line = f"- {'Best epoch' if why else 'Epoch'} {best} of {len(history)}{why}"
    if "validation_nse" in history and len(history):
        line += f"; median validation NSE there {_at_best(history, best):.3f}"
        if spatial:
            line += (" on the training catchments' validation years, "
                     f"{_at_best(history, best, 'spatial_validation_nse'):.3f} on the held-out "
                     "catchments")
    return line + "."


def _member_lines(final: dict) -> list[str]:
    """One line per member: its name, and the epoch it contributes with both validation scores
    there (from its own training record, when the checkpoint carries one)."""
    names = final.get("member_names", [])
    epochs_ = final.get("member_best_epochs", [None] * len(names))
    histories = final.get("member_histories", [[]] * len(names))
    lines = []
    for name, best, history in zip(names, epochs_, histories):
        line = f"  - `{name}`"
        frame = pd.DataFrame(history or [])
        if len(frame) and "epoch" in frame:
            line += ": " + _best_line(frame, best)[2:].rstrip(".")
        lines.append(line + ".")
    return lines


def _trainings(final: dict) -> pd.DataFrame:
    """The epochs of every distinct training behind the checkpoint, as one table."""
    frames = [pd.DataFrame(history) for history in trainings(final)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _sum(history: pd.DataFrame, column: str) -> float:
    return float(history[column].sum()) if column in history else float("nan")


def model_card(run: Store, cfg: Config, final: dict, digest: str, command: str,
               name: str = "") -> str:
    history = pd.DataFrame(final.get("history") or [])
    lines = [
        f"# Model card: `{name or cfg.run_id}` (from run `{cfg.run_id}`)",
        "",
        "A regional LSTM encoder for the hybrid LSTM–random-forest method, to reuse with "
        "`base_run:` pointing at this folder. Written by `hybrid export` from the run's own "
        "outputs.",
        "",
        *_data_section(cfg, final, final["scaler"]),
        *_model_section(cfg, final, history, digest),
        *_skill_section(cfg, run.read_frame(layout.SUMMARY)),
        *_cost_section(_trainings(final), read_timings(run)),
        *_reproduce_section(cfg, command),
        *_reuse_section(),
    ]
    return "\n".join(lines)


def _data_section(cfg: Config, final: dict, scaler: dict) -> list[str]:
    return [
        "## Data",
        "",
        f"- Dataset `{cfg.dataset}`; dynamic inputs {', '.join(scaler['dynamic_inputs'])}; "
        f"target `{scaler['target']}`.",
        f"- {len(scaler['static_attributes'])} static attributes: "
        f"{', '.join(scaler['static_attributes'])}.",
        f"- Training catchments: {len(final['split']['train'])} "
        "(`training_catchments.txt`); kept out: "
        f"{len(final['split'].get('out_of_training', []))}, drawn by seed "
        f"{cfg.seed if cfg.split_seed is None else cfg.split_seed}"
        + (f"; held out of the gradient steps to pick the epoch (spatial validation): "
           f"{len(final['split']['validation'])}" if final["split"].get("validation") else "")
        + ".",
        f"- Periods: training {cfg.train_start_date}..{cfg.train_end_date}, validation "
        f"{cfg.validation_start_date}..{cfg.validation_end_date}, test "
        f"{cfg.test_start_date}..{cfg.test_end_date}. Normalisation statistics come from the "
        "training period of the training catchments and travel in the checkpoint.",
        "",
    ]


def _model_section(cfg: Config, final: dict, history: pd.DataFrame, digest: str) -> list[str]:
    members = final.get("members")
    hp = members[0]["hparams"] if members else final["hparams"]
    best = final.get("best_epoch")
    # how the encoder was trained travels in its checkpoint; a run that reused it (base_run)
    # did not train it, and its own config holds defaults for these keys
    tc = {**cfg.to_dict(), **(final.get("config") or {})}
    ensemble = [f"- An ensemble of {len(members)} members (`hybrid.encoder.ensemble`): the forests "
                f"see all {sum(m['hparams']['hidden_size'] for m in members)} features side by "
                "side, the regional prediction is the members' mean. Members:",
                *_member_lines(final)] if members else []
    return [
        "## Model",
        "",
        *ensemble,
        f"- LSTM, hidden size {hp['hidden_size']}, {hp['num_layers']} layer(s), dropout "
        f"{hp['output_dropout']} before a linear head, forget-gate bias "
        f"{hp['initial_forget_bias']}.",
        f"- Windows of {tc['seq_length']} days, loss (`{tc['loss']}`) on the last "
        f"{tc['predict_last_n']}; batch {tc['batch_size']}, Adam at {tc['learning_rate']}, "
        f"precision {tc['precision']}.",
        # an ensemble: per member above
        *([] if members else [_best_line(history, best)]),
        f"- Checkpoint sha256 `{digest}`.",
        "",
    ]


def _skill_section(cfg: Config, summary: pd.DataFrame) -> list[str]:
    return [
        "## Skill on the test period",
        "",
        "Median over catchments of the run that made it (the hybrid fits one random forest per "
        f"catchment on the encoder's features; decoder `{cfg.decoder.name}` "
        f"{cfg.decoder.params or '(project defaults)'} fitted on the "
        f"`{cfg.decoder.fit_period}` period):",
        "",
        *_medians(summary),
        "",
    ]


def _cost_section(history: pd.DataFrame, timings: dict) -> list[str]:
    pretrain = timings.get("pretrain", {})
    return [
        "## Cost and hardware",
        "",
        # from the epochs' own records: a resumed training's last pass is only its tail
        f"- Pre-training: {_sum(history, 'seconds') / 60:.1f} minutes of training over "
        f"{len(history)} epochs ({_sum(history, 'cpu_seconds'):.0f} CPU-seconds, "
        f"{_sum(history, 'samples'):.0f} windows) on {pretrain.get('device', '?')} "
        f"({pretrain.get('gpu') or platform.machine() or '?'}, "
        f"{pretrain.get('threads', '?')} threads).",
        "- Stage times of the run's last pass: " + ", ".join(
            f"{k} {v['seconds']:.0f} s" for k, v in timings.items()) + ".",
        f"- Made with hybrid {provenance()['hybrid_version']} "
        f"(commit {provenance()['git_commit']}); exported "
        f"{dt.date.today().isoformat()}.",
        "",
    ]


def _reproduce_section(cfg: Config, command: str) -> list[str]:
    return [
        "## Reproduce",
        "",
        "```bash",
        command or f"hybrid run --config <the config of run {cfg.run_id}>",
        "```",
        "",
    ]


def _reuse_section() -> list[str]:
    return [
        "## Reuse",
        "",
        "Point a run config's `base_run` at this folder: the run skips pre-training and "
        "encodes and decodes its own catchments. Its `dynamic_inputs`, `static_attributes`, "
        "`target_variables` and `seq_length` must be the ones above (checked before any work); "
        "the model's own settings are taken from here. `configs/finetune_caravan.yml` is an "
        "example.",
        "",
    ]


def ensemble_final(run: Store, final: dict, run_name: str, snapshots: list[int],
                   members: list[Store]) -> dict:
    """The ensemble ``hybrid export`` writes: the run's best weights, or the run's epoch
    checkpoints ``snapshots``, plus the final checkpoints of the ``members`` stores."""
    if snapshots:
        finals = [snapshot(final, load_object(run, _epoch_key(run, e)), e) for e in snapshots]
        names = [f"{run_name}@epoch-{e:03d}" for e in snapshots]
    else:
        finals, names = [final], [run_name]
    for store in members:
        if not store.exists(layout.FINAL):
            raise StoreError(f"ensemble member {store.uri(layout.FINAL)} not found")
        finals.append(load_object(store, layout.FINAL))
        names.append(store.uri())
    return combine(finals, names)


def _epoch_key(run: Store, epoch: int) -> str:
    key = layout.epoch_key(epoch)
    if not run.exists(key):
        kept = ", ".join(str(e) for e in epochs(run)) or "none"
        raise StoreError(f"--snapshots: {run.uri(key)} not found (epochs kept: {kept})")
    return key
