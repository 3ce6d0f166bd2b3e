"""What a unit of work receives and what it gives back: two small, picklable dataclasses.

A ``Context`` travels to every worker (once per stage, by reference on Ray); workers rebuild
the store and the config from it instead of re-reading ``config.yml``, which would also miss
credentials given on the command line. A ``WorkResult`` comes back per catchment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from hybrid.config import Config, config_from_dict
from hybrid.store.storage import Store


@dataclass
class Context:
    """The run (store and config) plus the facts a stage decided on the driver."""

    store_url: str
    storage_options: dict[str, Any]
    config: dict[str, Any]
    #: catchments in the regional LSTM's training set (scoring labels rows with it)
    in_training: frozenset[str] = frozenset()
    #: the stamp each output folder's partitions carry, by stage name
    stamps: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``hybrid predict``: the ISO days served, its output folder and where inputs come from
    period: tuple[str, str] | None = None
    folder: str = ""
    inputs: str | None = None

    @classmethod
    def of(cls, store: Store, cfg: Config, **facts: Any) -> "Context":
        return cls(store.url, dict(store.storage_options), cfg.to_dict(), **facts)

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.store_url, self.storage_options)

    @functools.cached_property
    def cfg(self) -> Config:
        return config_from_dict(self.config)

    def __getstate__(self) -> dict:
        # the cached store holds an fsspec filesystem (sockets, locks): rebuild it remotely
        return {k: v for k, v in self.__dict__.items() if k not in ("store", "cfg")}


@dataclass
class WorkResult:
    """One catchment's unit of work: the partitions it wrote and what the driver needs next."""

    #: output folder -> the partition record written there (``hybrid.store.partitions``)
    records: dict[str, dict[str, Any]]
    #: metric rows (with ``gauge_id``) for the summary, when the work scored something
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: wall seconds of the work and the node it ran on (timings, placement)
    seconds: float = 0.0
    node_id: str = ""
    #: bad values found in the inputs and turned into missing days (``prepare``)
    warnings: list[str] = field(default_factory=list)
