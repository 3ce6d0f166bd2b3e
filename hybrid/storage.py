"""``hybrid.storage`` as scripts written before the sub-packages know it.

The store lives in ``hybrid.store.storage`` now; this name keeps user code and notebooks that
import ``from hybrid.storage import Store, open_store`` working.
"""

from hybrid.store.storage import Store, open_store, table_bytes

__all__ = ["Store", "open_store", "table_bytes"]
