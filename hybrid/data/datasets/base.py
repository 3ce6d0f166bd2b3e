"""The contract every dataset implements.

Following NeuralHydrology, a dataset is only two things: "load one catchment's daily series" and
"load the attribute table" (plus listing what catchments exist). Everything else — selecting
variables, checking dates, normalisation, windows — is shared code that never looks at a file
format, so adding a dataset means adding one small class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pandas as pd


class Dataset(ABC):
    """One source of catchment data.

    ``load_timeseries`` returns a DataFrame indexed by a daily ``DatetimeIndex`` named ``date``
    with one float column per variable, using the dataset's own variable names (those are what a
    config's ``dynamic_inputs`` / ``target_variables`` refer to). Missing values are NaN.

    ``load_attributes`` returns a DataFrame indexed by ``gauge_id`` with one column per static
    attribute (numeric where the source is numeric).
    """

    #: registry name, used as ``dataset:`` in the run config
    name: ClassVar[str]

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        self.data_dir = data_dir
        self.options = options

    @abstractmethod
    def gauge_ids(self) -> list[str]:
        """All catchments the dataset holds, sorted."""

    @abstractmethod
    def load_timeseries(self, gauge_id: str) -> pd.DataFrame:
        """Daily series of one catchment; raises ``DataError`` naming the file when malformed."""

    @abstractmethod
    def load_attributes(self, gauge_ids: list[str] | None = None) -> pd.DataFrame:
        """Static attributes, one row per catchment (all catchments when ``gauge_ids`` is None)."""
