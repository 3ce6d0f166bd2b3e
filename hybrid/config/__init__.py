"""The run configuration: one YAML file, typed and checked when it is loaded.

``schema`` holds the keys (NeuralHydrology's names where they fit), ``loading`` turns YAML into
a ``Config`` and ``validation`` checks what types cannot. Import from here: the names below are
the public surface, as they were before the config became a package.
"""

from hybrid.config.loading import config_from_dict, load_config
from hybrid.config.schema import (
    DEVICES,
    ENCODERS,
    BaselineConfig,
    Config,
    DecoderConfig,
    ResourcesConfig,
    default_config_dict,
)


def selected_basins(cfg: Config) -> list[str] | None:
    """The catchments a config names explicitly (None: every catchment of the dataset)."""
    return cfg.basins


__all__ = ["DEVICES", "ENCODERS", "BaselineConfig", "Config", "DecoderConfig", "ResourcesConfig",
           "config_from_dict", "default_config_dict", "load_config", "selected_basins"]
