"""Keys for the on-disk cache of prepared cases: the data's content plus the preprocessing.

MONAI's ``PersistentDataset`` stores the prepared tensors (``torch.save``) and reads them back
with ``torch.load(weights_only=True)``, so the cache never unpickles arbitrary objects. Its
default key hashes the *record* (paths), which would reuse a stale entry after an image file
is replaced; :class:`ContentKey` hashes the files' bytes and the preprocessing instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from medimg.data import keys
from medimg.data.leakage import content_digest

CACHE_FORMAT = "medimg-prepared-v1"


class ContentKey:
    """``hash_func`` for ``PersistentDataset``: digest of file contents, label and preprocessing.

    Args:
        context: everything else that decides the prepared output (preprocessing parameters,
            task), as a JSON-serialisable mapping.
    """

    def __init__(self, context: Mapping) -> None:
        self.context = json.dumps({"format": CACHE_FORMAT, **context}, sort_keys=True, default=str)

    def __call__(self, record: Mapping) -> bytes:
        parts = {"context": self.context}
        for key in (keys.IMAGE, keys.MASK):
            if record.get(key):
                parts[key] = content_digest(record[key])
        for key in (keys.LABEL, keys.COVARIATES):
            if key in record:
                value = record[key]
                parts[key] = str(value.tolist() if hasattr(value, "tolist") else value)
        parts[keys.CASE_ID] = str(record.get(keys.CASE_ID))
        text = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest().encode()
