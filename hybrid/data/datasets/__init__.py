"""Dataset registry: a config's ``dataset:`` name maps to one small loader class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybrid.data.datasets.base import Dataset
from hybrid.errors import ConfigError

_REGISTRY: dict[str, type[Dataset]] = {}


def register_dataset(name: str) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator that makes a loader available under ``name``."""

    def decorate(cls: type[Dataset]) -> type[Dataset]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"dataset name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_dataset(name: str, data_dir: str | None = None, **options: Any) -> Dataset:
    """Instantiate the loader registered as ``name``."""
    _load_builtin()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"dataset: unknown dataset {name!r}; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None
    return cls(data_dir, **options)


def _load_builtin() -> None:
    # Imported lazily so that importing the registry never pays for every loader.
    from hybrid.data.datasets import camels_de, camels_us, caravan, synthetic  # noqa: F401


__all__ = ["Dataset", "register_dataset", "get_dataset", "dataset_names"]
