"""Coded concepts (SNOMED CT, DICOM) for label names, stored in the model card.

DICOM results need a code for every finding and segment, not just a name. The config may
give them (``export.label_codes``); otherwise a few common names map to standard codes and
anything else gets a code in a private scheme (``99MEDIMG``), which DICOM allows for local
concepts and validators accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRIVATE_SCHEME = "99MEDIMG"

# name → (type code, category code); each code is (scheme, value, meaning).
_ABNORMAL = ("SCT", "49755003", "Morphologically Abnormal Structure")
_ANATOMY = ("SCT", "91723000", "Anatomical Structure")
_FINDING = ("SCT", "404684003", "Clinical finding")
KNOWN_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "lesion": (("SCT", "52988006", "Lesion"), _ABNORMAL),
    "tumor": (("SCT", "108369006", "Neoplasm"), _ABNORMAL),
    "tumour": (("SCT", "108369006", "Neoplasm"), _ABNORMAL),
    "nodule": (("SCT", "27925004", "Nodule"), _ABNORMAL),
    "effusion": (("SCT", "60046008", "Pleural effusion"), _ABNORMAL),
    "cardiomegaly": (("SCT", "8186001", "Cardiomegaly"), _ABNORMAL),
    "finding": (_FINDING, _FINDING),
    "liver": (("SCT", "10200004", "Liver"), _ANATOMY),
    "kidney": (("SCT", "64033007", "Kidney"), _ANATOMY),
    "lung": (("SCT", "39607008", "Lung"), _ANATOMY),
    "heart": (("SCT", "80891009", "Heart"), _ANATOMY),
}


def _code(value: Any, where: str) -> dict[str, str]:
    """A ``{scheme, value, meaning}`` dict from a mapping or a 3-sequence."""
    if isinstance(value, Mapping):
        code = {k: str(value.get(k, "")) for k in ("scheme", "value", "meaning")}
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        code = dict(zip(("scheme", "value", "meaning"), (str(v) for v in value), strict=True))
    else:
        raise ValueError(f"{where} must be {{scheme, value, meaning}}, got {value!r}")
    if not all(code.values()):
        raise ValueError(f"{where} needs a non-empty scheme, value and meaning, got {value!r}")
    return code


def label_entries(
    label_names: list[str], codes: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One card entry per label: index, name, type code and category code.

    Args:
        label_names: the task's label names in output order.
        codes: optional ``{name: {"type": code, "category": code}}`` overrides, where a
            code is ``{scheme, value, meaning}`` (``export.label_codes``).

    Raises:
        ValueError: a configured code names an unknown label or is malformed.
    """
    codes = dict(codes or {})
    unknown = sorted(set(codes) - set(label_names))
    if unknown:
        raise ValueError(f"export.label_codes names labels the task does not have: {unknown}")
    entries = []
    for index, name in enumerate(label_names):
        if name in codes:
            given = codes[name]
            if not isinstance(given, Mapping) or "type" not in given:
                raise ValueError(
                    f"export.label_codes.{name} must be {{type: code, category: code}}, "
                    f"got {given!r}"
                )
            type_code = _code(given["type"], f"export.label_codes.{name}.type")
            category = _code(given.get("category", _ABNORMAL), f"export.label_codes.{name}")
        elif name.lower() in KNOWN_CODES:
            known_type, known_category = KNOWN_CODES[name.lower()]
            type_code, category = _code(known_type, name), _code(known_category, name)
        else:
            type_code = {"scheme": PRIVATE_SCHEME, "value": name[:16], "meaning": name}
            category = _code(_ABNORMAL, name)
        entries.append({"index": index, "name": name, "code": type_code, "category": category})
    return entries
