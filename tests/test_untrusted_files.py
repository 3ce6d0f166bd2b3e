"""Files planted or broken in a finished run's store never run code, and say so in one line.

``hybrid predict`` loads each catchment's kept forest. Forests are ``skops.io`` files loaded
with an explicit list of trusted types, so a pickle payload planted where a forest was, or a
skops file naming another type, is refused before any object is built; an empty or cut file is
one line too. Each case runs the real command line on a private copy of one tiny finished run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from hybrid.cli import main
from hybrid.decoder.fit import load_decoder
from hybrid.errors import StoreError
from hybrid.store import layout

VICTIM = "synthetic_001"


class Payload:
    """Writes a marker file when unpickled: proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

    def __setstate__(self, state) -> None:  # what skops would call to build it
        Path(state["marker"]).touch()


@pytest.fixture
def copy(finished_copy):
    cfg, store = finished_copy
    return store, cfg.store


def _predict(store, root: str, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["predict", "--config", store.path(layout.CONFIG), "--store", root,
                 "--start", "1999-01-01", "--end", "1999-03-31"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    return code, errors


def test_a_pickle_planted_as_a_forest_never_runs(copy, tmp_path, capsys) -> None:
    store, root = copy
    marker = tmp_path / "ran"
    forest = Path(store.path(layout.decoder_key(VICTIM)))
    forest.unlink()
    Path(store.path(layout.legacy_decoder_key(VICTIM))).write_bytes(
        pickle.dumps(Payload(str(marker))))
    code, errors = _predict(store, root, capsys)
    assert code == 2 and len(errors) == 1
    assert "model.joblib: forests kept as pickles are not loaded" in errors[0]
    assert not marker.exists()


def test_a_forest_naming_an_untrusted_type_is_refused(copy, tmp_path, capsys) -> None:
    import skops.io as sio

    store, root = copy
    marker = tmp_path / "ran"
    Path(store.path(layout.decoder_key(VICTIM))).write_bytes(
        sio.dumps({"forest": Payload(str(marker))}))
    code, errors = _predict(store, root, capsys)
    assert code == 2 and len(errors) == 1  # its hash is not the one recorded
    assert "content hash" in errors[0]
    # one who could also rewrite the recorded hash still runs nothing: the type is refused
    with pytest.raises(StoreError) as excinfo:
        load_decoder(store, VICTIM)
    assert "Payload" in str(excinfo.value) and "was not loaded" in str(excinfo.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"])
def test_an_empty_or_cut_forest_is_one_line(copy, content, capsys) -> None:
    store, root = copy
    Path(store.path(layout.decoder_key(VICTIM))).write_bytes(content)
    code, errors = _predict(store, root, capsys)
    assert code == 2 and len(errors) == 1
    assert layout.decoder_key(VICTIM) in errors[0]
    assert "content hash" in errors[0] or "not a readable forest" in errors[0]


def test_a_period_before_the_data_is_one_line_per_catchment_not_a_crash(copy, capsys) -> None:
    store, root = copy
    capsys.readouterr()
    code = main(["predict", "--config", store.path(layout.CONFIG), "--store", root,
                 "--start", "1980-01-01", "--end", "1980-12-31"])
    err = capsys.readouterr().err
    assert "Error" not in err and "Traceback" not in err
    assert f"catchment {VICTIM} skipped: the period ends on 1980-12-31, before" in err
    assert code in (0, 2)
