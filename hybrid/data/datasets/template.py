"""Template for a new dataset: copy this file to ``hybrid/data/datasets/<name>.py``.

A dataset is two functions and a listing (NeuralHydrology's ``datasetzoo/template.py`` shape):
everything else — choosing variables, cleaning bad numbers, periods, normalisation, windows —
is shared code (``hybrid.data.canonical``) that never looks at a file format.

Steps:

1. Rename the class, and the name in ``@register_dataset`` (what a config's ``dataset:`` says).
2. Implement the three methods below; raise ``DataError`` naming the file for a malformed one.
3. Add the module to the import list of ``_load_builtin`` in ``hybrid/data/datasets/__init__.py``
   (the one registry line).
4. Write a test that builds a few small files in the layout (``tests/test_datasets_camels_de.py``
   is an example) and one that reads ``../shared/data`` if the dataset is there.

This module is not imported by the registry, so the template itself is never a dataset.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hybrid.data.datasets import register_dataset
from hybrid.data.datasets._csv import open_folder
from hybrid.data.datasets.base import Dataset


@register_dataset("my_dataset")
class MyDataset(Dataset):
    """One line on the layout: ``<data_dir>/<where the series and attributes live>``."""

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        # refuses unknown dataset_options and a missing folder, in one line each
        self.root = open_folder(self, data_dir, options, allowed=())

    def gauge_ids(self) -> list[str]:
        # every catchment the folder holds, sorted, e.g. from file names
        raise NotImplementedError

    def load_timeseries(self, gauge_id: str) -> pd.DataFrame:
        # a daily DatetimeIndex named "date", one float column per variable, the dataset's own
        # variable names (configs refer to them), NaN where missing, sorted by date
        raise NotImplementedError

    def load_attributes(self, gauge_ids: list[str] | None = None) -> pd.DataFrame:
        # indexed by gauge_id, one column per static attribute
        raise NotImplementedError
