"""Every shipped config loads, and where its data is here, passes ``hybrid check``.

The configs are what users copy; a typo in one, a path that resolves wrongly from another
working directory, or an input list that no longer matches the shipped encoder is caught here
rather than by a user an hour into a run.
"""

from __future__ import annotations

import re
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


# ------------------------------------------------------------------ what the docs say of them
REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "infra" / "README.md"]


def test_run_folders_named_in_the_readmes_are_those_the_configs_write() -> None:
    """`runs/<run_id>` in an example must be where a shipped config writes (its store is
    `<clone>/runs`), or the example reads a folder no command makes."""
    written = {}
    for path in CONFIGS:
        cfg = load_config(path)
        if Path(cfg.store) == REPO / "runs":
            written[cfg.run_id] = path.name
    named = {(doc.name, name) for doc in DOCS
             for name in re.findall(r"\bruns/([A-Za-z0-9][\w.-]*)", doc.read_text())}
    assert named, "no run folder named: the pattern is wrong"
    unknown = sorted((doc, name) for doc, name in named if name not in written)
    assert not unknown, f"not a shipped config's run folder: {unknown}; configs write {written}"


def _comments(path: Path) -> str:
    lines = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_comments_say_what_the_forests_are_fitted_on(path: Path) -> None:
    """A comment that says which period the forests are fitted on matches the resolved
    `decoder.fit_period` (whose default is train_validation)."""
    comments = _comments(path)
    fit_period = load_config(path).decoder.fit_period
    if re.search(r"fitted (each forest )?on the training and validation periods", comments):
        assert fit_period == "train_validation", (path.name, fit_period)
    elif re.search(r"fitted (each forest )?on the training (period|years)", comments):
        assert fit_period == "train", (path.name, fit_period)


def test_the_readme_job_submission_authenticates() -> None:
    """The shipped clusters require token authentication: a `ray job submit` without
    RAY_AUTH_MODE=token fails with "Missing authentication token"."""
    text = (REPO / "README.md").read_text()
    blocks, block, prose = [], None, []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if block is None:
                block = []
            else:
                blocks.append("\n".join(block))
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    commands = [(b, i) for b in blocks for i, line in enumerate(b.splitlines())
                if line.strip().startswith("ray job submit")]
    assert commands
    for block, at in commands:
        assert "export RAY_AUTH_MODE=token" in [line.strip() for line in block.splitlines()[:at]], \
            block
    inline = re.findall(r"`(ray job submit [^`]*--address[^`]*)`", "\n".join(prose))
    assert not inline, f"a command outside a code block, without the token mode: {inline}"
