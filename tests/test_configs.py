"""Every shipped config loads, and where its data is here, passes ``hybrid check``.

The configs are what users copy; a typo in one, a path that resolves wrongly from another
working directory, or an input list that no longer matches the shipped encoder is caught here
rather than by a user an hour into a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_from_any_working_directory(path: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    assert cfg.run_id
    if cfg.data_dir and "://" not in cfg.data_dir:
        assert Path(cfg.data_dir).is_absolute()
    assert Path(cfg.store).is_absolute() and Path(cfg.store).parent == path.parents[1]


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["caravan_camels_us.yml", "camels_us_ncar.yml",
                                  "finetune_caravan.yml"])
def test_config_passes_check_on_the_shared_data(name: str, shared_data, tmp_path) -> None:
    from hybrid.stages.check import check

    path = next(p for p in CONFIGS if p.name == name)
    cfg = load_config(path, {"store": str(tmp_path / "store")})
    result = check(cfg)
    assert result["usable"] >= 10 and not result["failed"]
