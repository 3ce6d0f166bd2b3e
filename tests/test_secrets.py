"""Credentials never printed: not in an error line, a log line, a traceback or the run folder.

Each case runs the real command line with a secret in a store URL or an endpoint URL and
checks that the secret appears nowhere in what the command printed, and that the command gives
one line and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybrid.cli import main

SECRET = "Sup3rS3cretValue"


def _config(tmp_path: Path, tiny_config, **changes) -> Path:
    data = tiny_config(str(tmp_path / "s"), epochs=1).to_dict()
    data.update(changes)
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: Path, capsys, command: str = "prepare") -> tuple[int, str]:
    capsys.readouterr()
    code = main([command, "--config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("store", [f"s3://AKIAEXAMPLE:{SECRET}@bucket/runs",
                                   f"https://user:{SECRET}@example.org/runs"])
def test_credentials_in_a_store_url_are_refused_without_printing_them(tmp_path, tiny_config,
                                                                      capsys, store) -> None:
    code, printed = _run(_config(tmp_path, tiny_config, store=store), capsys)
    assert code == 2 and SECRET not in printed
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: store: ") and "***@" in lines[0]


def test_an_endpoint_with_a_password_is_never_printed(tmp_path, tiny_config, capsys) -> None:
    options = {"endpoint_url": f"http://user:{SECRET}@127.0.0.1:9", "key": "k", "secret": "s",
               "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    path = _config(tmp_path, tiny_config, store="s3://bucket/runs", storage_options=options)
    code, printed = _run(path, capsys)
    assert code == 2 and SECRET not in printed
    lines = printed.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: storage_options.endpoint_url: http://***@127.0.0.1:9")


def test_an_unknown_storage_option_is_one_line(tmp_path, tiny_config, capsys) -> None:
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": SECRET,
               "config_kwargs": {"bogus_option": 1}}
    path = _config(tmp_path, tiny_config, store="s3://bucket/runs", storage_options=options)
    code, printed = _run(path, capsys)
    assert code == 2 and SECRET not in printed
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and "bad storage_options" in lines[0] and "bogus_option" in lines[0]


def test_a_traceback_and_a_log_line_never_carry_a_secret(tmp_path, tiny_config, capsys,
                                                         monkeypatch) -> None:
    """A bug keeps its traceback (exit 1), but not the credentials of a URL in it."""
    import hybrid.stages.prepare
    from hybrid.logs import logger

    def bug(*args, **kwargs):
        logger().info(f"about to read s3://key:{SECRET}@bucket/x")
        raise RuntimeError(f"boom at s3://key:{SECRET}@bucket/x")

    monkeypatch.setattr(hybrid.stages.prepare, "prepare", bug)
    code, printed = _run(_config(tmp_path, tiny_config), capsys)
    assert code == 1 and "Traceback" in printed and "RuntimeError: boom at s3://***@bucket/x" \
        in printed
    assert "about to read s3://***@bucket/x" in printed
    assert SECRET not in printed
    run_log = (tmp_path / "s" / "t" / "run.log").read_text()
    assert "s3://***@bucket/x" in run_log and SECRET not in run_log


def test_the_run_folder_never_holds_an_endpoint_password(tmp_path, tiny_config) -> None:
    from hybrid.store.runs import without_secrets

    data = tiny_config(str(tmp_path / "s")).to_dict()
    data["storage_options"] = {"endpoint_url": f"http://user:{SECRET}@minio:9000",
                               "client_kwargs": {"endpoint_url": f"http://u:{SECRET}@m:9"}}
    kept = without_secrets(data)["storage_options"]
    assert SECRET not in yaml.safe_dump(kept)
    assert kept["endpoint_url"] == "http://***@minio:9000"
