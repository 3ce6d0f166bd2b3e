"""Reading a run config: YAML in, a typed ``Config`` out, every mistake named by its key.

Coercion walks the dataclasses of ``hybrid.config.schema`` so a new key needs no code here;
an unknown key gets a "did you mean" from the known ones, because a typo in a 400-catchment run
should cost seconds, not an hour.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hybrid.config.schema import Config
from hybrid.config.validation import validate
from hybrid.errors import ConfigError


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML run file; ``overrides`` (from the CLI) win over the file.

    Relative paths in the file (``store``, ``data_dir``, ``basin_file``, ``base_run``) are
    relative to the file's folder, so a config means the same run from whatever directory it
    is started.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except _DuplicateKey as err:
        raise ConfigError(f"{path} (line {err.line}): key {err.key!r} is given twice (first on "
                          f"line {err.first}); YAML would silently keep the last one") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    for key in ("store", "data_dir", "basin_file", "base_run"):
        value = data.get(key)
        if isinstance(value, str) and value and "://" not in value:
            data[key] = str((path.parent / Path(value).expanduser()).resolve())
    data.update(overrides or {})
    return config_from_dict(data)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first = key, line, first


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text: ``1999-02-30`` then fails in ``_coerce``, naming
    its key, instead of as a bare ``ValueError`` from inside the YAML parser. A key given twice
    in one mapping is an error: YAML itself keeps the last value without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
        return super().construct_mapping(node, deep)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A checked config from plain data; ``_provenance`` (written into a run's config.yml by
    hybrid) is ignored, and a ``basin_file`` is read into ``basins``."""
    data = {k: v for k, v in data.items() if k != "_provenance"}
    if data.get("basin_file") is not None:
        data = _read_basin_file(data)
    cfg = _build(Config, data, prefix="")
    validate(cfg)
    return cfg


def _read_basin_file(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("basins") is not None:
        raise ConfigError("basins: give either basins or basin_file, not both")
    path = Path(str(data["basin_file"])).expanduser()
    try:
        text = path.read_text()
    except OSError:
        raise ConfigError(f"basin_file: file not found: {path.resolve()}") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()
           and not line.lstrip().startswith("#")]
    if not ids:
        raise ConfigError(f"basin_file: {path.resolve()} lists no catchment")
    return {**data, "basins": ids, "basin_file": None}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = _closest(unknown[0], list(fields))
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {key!r}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: unexpected value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".")
    if origin is list:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    return _scalar(value, tp, key)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    """Booleans, numbers, strings and dates, strictly: YAML's ``yes`` is not a number."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("]"):
            return str(value)  # gauge ids written without quotes in YAML
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an ISO date (YYYY-MM-DD), got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not user input


def _closest(word: str, options: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None
