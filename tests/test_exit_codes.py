"""Exit codes and one-line errors, through ``hybrid.cli.main`` as a user meets them.

0: everything finished; 3: the run finished but catchments failed (named, with reasons, in the
summary and report); 2: a problem with the config, the data or the store, said in one line that
names the file, URL or key and what to do; never a traceback for those.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml

from hybrid.cli import main
from hybrid.store import layout
from hybrid.store.runs import run_store


def _yaml(path: Path, cfg, **changes) -> Path:
    data = cfg.to_dict()
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_version(capsys) -> None:
    import hybrid

    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip() == f"hybrid {hybrid.__version__}"


def test_failed_catchments_exit_3_and_are_named(caravan_files, tmp_path, capsys) -> None:
    def once(day):  # a single observed training day: the LSTM trains, the forest cannot
        return 2.0 if day == __import__("pandas").Timestamp("2000-06-01") or day.year == 2001 \
            else None

    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines(flow=once),
                         "x_3": caravan_files.lines()})
    cfg = caravan_files.config(str(tmp_path / "store"), n_train_basins=2)
    assert main(["run", "--config", str(_yaml(tmp_path / "run.yml", cfg))]) == 3
    captured = capsys.readouterr()
    assert "decode: catchment x_2 failed: ValueError: only 1 observed training days" \
        in captured.err
    assert "finished with 1 failed catchment(s): x_2 (reasons in the report)" in captured.err
    assert captured.out.startswith("report: ")
    report = run_store(cfg).read_text(layout.REPORT)
    assert "## Failed catchments (1)" in report and "- x_2 at decode" in report
    # decode alone says the same
    assert main(["decode", "--config", str(tmp_path / "run.yml")]) == 3


def test_check_reports_without_writing(caravan_files, tmp_path, capsys) -> None:
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines("2001-12-15")})
    cfg = caravan_files.config(str(tmp_path / "store"))
    assert main(["check", "--config", str(_yaml(tmp_path / "run.yml", cfg))]) == 0
    err = capsys.readouterr().err
    assert "check: catchment x_2 would be skipped: only 17 days" in err
    assert "check: 1 usable catchment(s), 1 skipped, 0 failing" in err
    assert not (tmp_path / "store").exists()
    bad = _yaml(tmp_path / "bad.yml", cfg, static_attributes=["p_mean", "elevation"])
    assert main(["check", "--config", str(bad)]) == 2
    assert "static_attributes: 'elevation'" in _error_line(capsys)


def test_a_project_error_inside_the_encoder_actor_is_one_line(ray_local, caravan_files,
                                                              tmp_path, capsys) -> None:
    """It used to print ~25 lines of remote traceback with ANSI codes."""
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()})
    # the data start 2000-01-01: no 30-day window ends inside a 20-day training period
    cfg = caravan_files.config(str(tmp_path / "store"), train_start_date="2000-01-01",
                               train_end_date="2000-01-20", resources={"executor": "ray"})
    assert main(["run", "--config", str(_yaml(tmp_path / "run.yml", cfg))]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: pretrain: no valid training window in any training "
                           "catchment between 2000-01-01 and 2000-01-20")
    assert "\x1b[" not in line


# ------------------------------------------------------------------------------ the store
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_into(tmp_path, caravan_files, capsys, store: str, options: dict | None = None
                  ) -> str:
    caravan_files.write({"x_1": caravan_files.lines()})
    cfg = caravan_files.config(store, storage_options=options or {})
    assert main(["prepare", "--config", str(_yaml(tmp_path / "run.yml", cfg))]) == 2
    return _error_line(capsys)


def test_unknown_protocol(tmp_path, caravan_files, capsys) -> None:
    line = _prepare_into(tmp_path, caravan_files, capsys, "foo://bucket/runs")
    assert "foo://bucket/runs" in line and "unknown protocol 'foo'" in line and "s3://" in line


def test_missing_bucket(tmp_path, caravan_files, capsys, s3_endpoint) -> None:
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    line = _prepare_into(tmp_path, caravan_files, capsys, "s3://no-such-bucket-x/runs", options)
    assert "s3://no-such-bucket-x/runs/bad" in line
    assert "bucket 'no-such-bucket-x' does not exist" in line


def test_endpoint_down(tmp_path, caravan_files, capsys) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    options = {"endpoint_url": endpoint, "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    line = _prepare_into(tmp_path, caravan_files, capsys, "s3://bucket-x/runs", options)
    assert "s3://bucket-x/runs/bad" in line and f"cannot reach the store's endpoint {endpoint}" \
        in line


def test_no_credentials(tmp_path, caravan_files, capsys, s3_endpoint, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    line = _prepare_into(tmp_path, caravan_files, capsys, "s3://bucket-y/runs",
                         {"endpoint_url": s3_endpoint})
    assert "no S3 credentials found" in line and "AWS_ACCESS_KEY_ID" in line


def test_wrong_credentials(tmp_path, caravan_files, capsys) -> None:
    """A private moto server that checks credentials (the shared one accepts any)."""
    import logging

    import s3fs
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing",
                      skip_instance_cache=True).mkdir("auth-bucket")
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        line = _prepare_into(tmp_path, caravan_files, capsys, "s3://auth-bucket/runs",
                             {"endpoint_url": endpoint, "key": "wrong", "secret": "wrong"})
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()
    assert "s3://auth-bucket/runs/bad" in line and "access denied" in line
    assert "check the credentials" in line


def test_read_only_folder(tmp_path, caravan_files, capsys) -> None:
    if os.geteuid() == 0:
        store = "/sys/hybrid-read-only-store"  # refused even to root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        store = str(locked / "runs")
    line = _prepare_into(tmp_path, caravan_files, capsys, store)
    assert store in line and ("permission denied" in line or "cannot write" in line)


def test_store_path_that_is_a_file(tmp_path, caravan_files, capsys) -> None:
    (tmp_path / "afile").write_text("not a folder")
    line = _prepare_into(tmp_path, caravan_files, capsys, str(tmp_path / "afile"))
    assert str(tmp_path / "afile") in line and "is a file where a folder is needed" in line


def test_a_finished_run_in_a_read_only_store_can_be_reported(tmp_path, tiny_config, capsys,
                                                             monkeypatch) -> None:
    """Reading a finished run writes nothing: not config.yml, not a manifest, not run.log."""
    from hybrid.errors import StoreError
    from hybrid.store.storage import Store

    cfg = tiny_config(str(tmp_path / "store"), epochs=1)
    path = _yaml(tmp_path / "run.yml", cfg)
    assert main(["run", "--config", str(path)]) == 0
    capsys.readouterr()

    def refuse(self, key, data):
        raise StoreError(f"{self.uri(key)}: permission denied to write (read-only store)")

    monkeypatch.setattr(Store, "write_bytes", refuse)
    assert main(["report", "--config", str(path)]) == 0
    assert capsys.readouterr().out.startswith("report: ")
    assert main(["run", "--config", str(path)]) == 0  # all done: only run.log is skipped
    assert "warning: run.log not written" in capsys.readouterr().err


# --------------------------------------------------------------- check reaches the store
def _check(tmp_path, caravan_files, store: str, options: dict | None = None) -> int:
    caravan_files.write({"x_1": caravan_files.lines()})
    cfg = caravan_files.config(store, storage_options=options or {})
    return main(["check", "--config", str(_yaml(tmp_path / "run.yml", cfg))])


def test_check_refuses_a_missing_bucket_as_run_does(tmp_path, caravan_files, capsys,
                                                   s3_endpoint) -> None:
    """It used to list the (empty) folder, read the data and say "1 usable catchment"."""
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    assert _check(tmp_path, caravan_files, "s3://nobucket-check/runs", options) == 2
    line = _error_line(capsys)
    assert "s3://nobucket-check/runs/bad" in line
    assert "bucket 'nobucket-check' does not exist" in line


def test_check_writes_a_probe_and_leaves_nothing(tmp_path, caravan_files, capsys,
                                                 s3_bucket) -> None:
    import s3fs

    url, options = s3_bucket
    assert _check(tmp_path, caravan_files, url, options) == 0
    assert "check: 1 usable catchment(s)" in capsys.readouterr().err
    fs = s3fs.S3FileSystem(endpoint_url=options["endpoint_url"], key="testing",
                           secret="testing", skip_instance_cache=True)
    assert fs.find(url.split("/")[2]) == []  # the probe was written and deleted


@pytest.mark.parametrize("case", ["file", "read-only"])
def test_check_refuses_a_store_it_cannot_write(tmp_path, caravan_files, capsys, case) -> None:
    if case == "file":
        (tmp_path / "afile").write_text("not a folder")
        store, words = str(tmp_path / "afile"), "is a file where a folder is needed"
    elif os.geteuid() == 0:
        store, words = "/sys/hybrid-read-only-store", "permission denied"  # refused to root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        store, words = str(locked / "runs"), "permission denied"
    assert _check(tmp_path, caravan_files, store) == 2
    line = _error_line(capsys)
    assert store in line and words in line


# ------------------------------------------------------ a run that is not there is named
def _runs(store: Path, names: list[str]) -> None:
    for name in names:
        (store / name).mkdir(parents=True)
        (store / name / "config.yml").write_text("run_id: x\n")
    (store / "notes.txt").write_text("not a run")


@pytest.mark.parametrize("command", [["report"], ["score"], ["export", "--out", "OUT"],
                                     ["predict", "--start", "1999-01-01", "--end", "1999-12-31"]])
def test_a_run_id_typo_names_the_runs_that_exist(tmp_path, tiny_config, capsys, command) -> None:
    """It used to say ".../summary/_manifest.json not found: run `hybrid decode` first" (and
    predict and score wrote a config.yml into a new folder named by the typo)."""
    store = tmp_path / "store"
    _runs(store, ["base", "demo"])
    path = _yaml(tmp_path / "run.yml", tiny_config(str(store)))
    command = [str(tmp_path / "out") if c == "OUT" else c for c in command]
    assert main([*command, "--config", str(path), "--run-id", "demo-typo"]) == 2
    assert _error_line(capsys) == (
        f"error: no run 'demo-typo' under {store}: the run(s) there: base, demo; check run_id "
        "(--run-id) and store (--store)")
    assert sorted(os.listdir(store)) == ["base", "demo", "notes.txt"]  # nothing written


def test_many_runs_are_counted_and_a_wrong_store_is_named(tmp_path, tiny_config, capsys) -> None:
    store = tmp_path / "store"
    _runs(store, [f"r{i:02d}" for i in range(11)])
    path = _yaml(tmp_path / "run.yml", tiny_config(str(store)))
    assert main(["report", "--config", str(path), "--run-id", "r99"]) == 2
    assert ": the run(s) there: r00, r01, r02, r03, r04, r05, r06, r07 and 3 more; " \
        in _error_line(capsys)
    assert main(["report", "--config", str(path), "--store", str(tmp_path / "nowhere")]) == 2
    assert _error_line(capsys) == (
        f"error: no run 't' under {tmp_path / 'nowhere'}: that folder does not exist; check "
        "run_id (--run-id) and store (--store)")
    assert not (tmp_path / "nowhere").exists()


def test_a_missing_bucket_in_report_is_named(tmp_path, tiny_config, capsys,
                                             s3_endpoint) -> None:
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    path = _yaml(tmp_path / "run.yml", tiny_config("s3://nobucket-report/runs", options))
    assert main(["report", "--config", str(path)]) == 2
    assert _error_line(capsys) == ("error: no run 't' under s3://nobucket-report/runs: bucket "
                                   "'nobucket-report' does not exist; fix the store URL")
