"""Fast, pydicom-free reader of the scan header fields of plain little-endian DICOM files."""

from __future__ import annotations

import math
import os
import struct
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.uid import UID, AllTransferSyntaxes

_CHUNK = 16384  # first read; the header of a typical slice fits
_MAX_HEADER = 64 << 20  # a header walk reading more than this is left to pydicom
_MAX_DEPTH = 16  # nested undefined-length sequences deeper than this are left to pydicom
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD  # elements of group FFFE
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = frozenset(
    str(uid)
    for uid in map(UID, AllTransferSyntaxes)
    if uid.is_little_endian and not uid.is_implicit_VR and not uid.is_deflated
)
"""Transfer syntaxes whose dataset is explicit VR little endian (encapsulated ones included)."""
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())  # 2 reserved + 4 length
_SHORT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
)  # 2-byte length
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # where pydicom's header read stops
_CHARSET = 0x00080005
_CODECS = {b"": "latin-1", b"ISO_IR 6": "latin-1", b"ISO_IR 100": "latin-1", b"ISO_IR 192": "utf-8"}
"""Specific Character Sets read here, with the codec pydicom decodes their text with."""
_KEYWORDS = {  # keyword -> VR expected in the file (anything else is left to pydicom)
    "PatientID": b"LO",
    "StudyInstanceUID": b"UI",
    "SeriesInstanceUID": b"UI",
    "Modality": b"CS",
    "Manufacturer": b"LO",
    "ImagePositionPatient": b"DS",
    "ImageOrientationPatient": b"DS",
    "PixelSpacing": b"DS",
    "ImagerPixelSpacing": b"DS",
    "Rows": b"US",
    "Columns": b"US",
    "InstanceNumber": b"IS",
    "NumberOfFrames": b"IS",
}
_TAG = {keyword: tag_for_keyword(keyword) for keyword in _KEYWORDS}
_VR = {_TAG[keyword]: vr for keyword, vr in _KEYWORDS.items()}
_BAIL_TAGS = frozenset(  # enhanced multi-frame: pydicom parses the functional groups
    {
        tag_for_keyword("SharedFunctionalGroupsSequence"),
        tag_for_keyword("PerFrameFunctionalGroupsSequence"),
    }
)
_KEPT = frozenset(_VR) | _BAIL_TAGS | {_CHARSET}
_WATCHED = frozenset((tag & 0xFFFF) << 16 | tag >> 16 for tag in _KEPT | _PIXEL_TAGS)
"""Tags whose elements the walk stops at, as read by one little-endian ``I`` (element, group)."""
_EXPLICIT_KEY = struct.Struct("<I2sH").unpack_from
_IMPLICIT_KEY = struct.Struct("<II").unpack_from
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHL").unpack_from
_LENGTH = struct.Struct("<L").unpack_from
_US = struct.Struct("<H").unpack
_SHORT_LENGTH = struct.Struct("<H").unpack_from
_READ_ERRORS = (OSError, struct.error, ValueError, IndexError, UnicodeError, RecursionError)


def read_header_fast(path: str) -> dict[str, Any] | None:
    """Scan header fields of one DICOM file, parsed without pydicom; None to use pydicom.

    Only files with the ``DICM`` prefix, a well-formed explicit VR little-endian file meta
    group and an (explicit or implicit VR) little-endian dataset are parsed: the dataset's
    top-level elements are walked up to the pixel data (undefined-length sequences are
    walked item by item). Anything unusual (big endian or deflated data, a VR or character set
    pydicom would treat specially, truncation, enhanced multi-frame functional groups) gives
    None, and the caller reads the file with pydicom instead, so the result never differs.

    Args:
        path: The file to read.

    Returns:
        The same dict as ``medimg.data.scan``'s pydicom path gives (``patient_id``,
        ``study_uid``, ``series_uid``, ``modality``, ``manufacturer``, ``image``, ``rows``,
        ``columns``, ``instance_number``, ``frames``, ``per_frame``, ``planes``), or None.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)  # unbuffered: no file object to build
    except OSError:
        return None
    try:
        parsed = _top_level(_Source(descriptor))
    except _READ_ERRORS:
        return None
    finally:
        os.close(descriptor)
    if parsed is None:
        return None
    return _fields(*parsed)


class _Source:
    """The leading bytes of an open file, read further on demand."""

    __slots__ = ("data", "descriptor", "eof")

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.data = os.read(descriptor, _CHUNK)
        self.eof = False  # known only once a read returns nothing

    def has(self, end: int) -> bool:
        """True when the first ``end`` bytes are loaded, reading more of the file if needed."""
        while len(self.data) < end and not self.eof:
            if end > _MAX_HEADER:
                return False
            more = os.read(self.descriptor, max(end - len(self.data), _CHUNK))
            if more:
                self.data += more
            else:
                self.eof = True
        return len(self.data) >= end


def _top_level(source: _Source) -> tuple[dict[int, tuple[bytes | None, bytes]], bool] | None:
    """The kept top-level elements (tag -> (explicit VR, value)) and whether pixel data follows."""
    data = source.data
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    pos = _file_meta(source)
    if pos is None:
        return None
    implicit, pos = pos
    if not source.has(pos + 12):
        return None  # empty or nearly empty dataset
    data = source.data
    looks_explicit = 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B
    if looks_explicit == implicit or data[pos : pos + 2] == b"\0\0":  # pydicom switches VR
        return None  # ... or reads a command set (group 0000)
    kept: dict[int, tuple[bytes | None, bytes]] = {}
    n = len(data)
    vr: bytes | None = None
    while True:
        if pos + 12 > n and not source.eof:
            source.has(pos + 12)
            data = source.data
            n = len(data)
        if pos + 8 > n:
            if pos == n and source.eof:
                return kept, False  # end of file without pixel data
            return None  # truncated, or a header too long to walk here
        if implicit:
            key, length = _IMPLICIT_KEY(data, pos)
            start = pos + 8
        else:
            key, vr, length = _EXPLICIT_KEY(data, pos)
            if vr in _SHORT_VRS:
                start = pos + 8
            elif vr in _LONG_VRS and pos + 12 <= n:
                length = _LENGTH(data, pos + 8)[0]
                start = pos + 12
            else:
                return None
        if key not in _WATCHED and length != _UNDEFINED and key & 0xFFFF != 0xFFFE:
            pos = start + length  # the common case: an element not needed here
            continue
        tag = (key & 0xFFFF) << 16 | key >> 16
        if tag in _PIXEL_TAGS:
            return kept, True
        if tag >> 16 == 0xFFFE:
            return None
        if length == _UNDEFINED:
            if tag in _KEPT or not _is_sequence(source, tag, vr, start):
                return None
            pos = _skip_sequence(source, start, implicit, 0)
            if pos < 0:
                return None
            data = source.data
            n = len(data)
            continue
        pos = start + length
        if tag in _BAIL_TAGS or not source.has(pos):
            return None
        data = source.data
        n = len(data)
        kept[tag] = (vr, data[start:pos])


def _file_meta(source: _Source) -> tuple[bool, int] | None:
    """(implicit VR?, dataset start) from a well-formed file meta group, or None."""
    data = source.data
    pos = 132
    syntax = None
    while True:
        if not source.has(pos + 12):
            return None
        data = source.data
        group, element, vr, length = _EXPLICIT(data, pos)
        if group != 2:
            break
        if vr in _SHORT_VRS:
            start = pos + 8
        elif vr in _LONG_VRS:
            length = _LENGTH(data, pos + 8)[0]
            start = pos + 12
        else:
            return None
        if length == _UNDEFINED or not source.has(start + length):
            return None
        data = source.data
        pos = start + length
        if element == 0x0010:
            syntax = data[start:pos] if vr == b"UI" else None
    if pos == 132 or syntax is None:
        return None
    uid = syntax.decode("latin-1").rstrip("\0 ")
    if uid == _IMPLICIT_LE:
        return True, pos
    if uid in _EXPLICIT_LE:
        return False, pos
    return None


def _is_sequence(source: _Source, tag: int, vr: bytes | None, start: int) -> bool:
    """Whether pydicom parses an undefined-length element as a sequence we can walk."""
    if vr is not None:
        return vr == b"SQ"  # UN of undefined length switches to implicit VR: left to pydicom
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private: pydicom looks for an item tag
        return source.has(start + 4) and source.data[start : start + 4] == b"\xfe\xff\x00\xe0"


def _skip_sequence(source: _Source, pos: int, implicit: bool, depth: int) -> int:
    """Position after an undefined-length sequence's delimiter, or -1 if it is malformed."""
    if depth > _MAX_DEPTH:
        return -1
    while True:
        if not source.has(pos + 8):
            return -1
        group, element, length = _IMPLICIT(source.data, pos)
        pos += 8
        if group != 0xFFFE:
            return -1
        if element == _SEQUENCE_END:
            return pos if length == 0 else -1
        if element != _ITEM:
            return -1
        end = None if length == _UNDEFINED else pos + length
        pos = _skip_item(source, pos, end, implicit, depth)
        if pos < 0:
            return -1


def _skip_item(source: _Source, pos: int, end: int | None, implicit: bool, depth: int) -> int:
    """Position after a sequence item's elements (``end`` None: after its delimiter), or -1."""
    vr: bytes | None = None
    while end is None or pos < end:
        if not source.has(pos + 12):  # an item is always followed by at least a delimiter
            return -1
        data = source.data
        group, element, length = _IMPLICIT(data, pos)
        if group == 0xFFFE:
            if end is None and element == _ITEM_END and length == 0:
                return pos + 8
            return -1
        if implicit:
            start = pos + 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _SHORT_VRS:
                length = _SHORT_LENGTH(data, pos + 6)[0]
                start = pos + 8
            elif vr in _LONG_VRS:
                length = _LENGTH(data, pos + 8)[0]
                start = pos + 12
            else:
                return -1
        if length == _UNDEFINED:
            if not _is_sequence(source, group << 16 | element, vr, start):
                return -1
            pos = _skip_sequence(source, start, implicit, depth + 1)
            if pos < 0:
                return -1
            continue
        pos = start + length
    return pos if pos == end else -1


def _fields(kept: dict[int, tuple[bytes | None, bytes]], image: bool) -> dict[str, Any] | None:
    """scan.py's header fields from the kept raw elements; None where pydicom must decide."""
    codec = "latin-1"
    charset = kept.get(_CHARSET)
    if charset is not None:
        if charset[0] not in (None, b"CS") or charset[1] not in _CODECS:
            return None
        codec = _CODECS[charset[1]]
    values: dict[str, Any] = {}
    for keyword, tag in _TAG.items():
        element = kept.get(tag)
        if element is None:
            values[keyword] = None
            continue
        vr, raw = element
        expected = _VR[tag]
        if vr is not None and vr != expected:
            return None
        if expected == b"US":
            if len(raw) not in (0, 2):
                return None
            values[keyword] = _US(raw)[0] if raw else None
        elif expected == b"LO":
            if b"\\" in raw or b"\x1b" in raw:
                return None  # pydicom gives a MultiValue / decodes escape sequences
            try:
                values[keyword] = raw.decode(codec).rstrip("\0 ")
            except UnicodeError:
                return None  # pydicom decodes it with replacement characters
        else:  # UI, CS, DS, IS: plain ASCII, decoded like scan.py's _value
            text = raw.decode("ascii", "replace").strip(" \0")
            values[keyword] = text.split("\\") if "\\" in text else text
    rows, columns = as_int(values["Rows"]), as_int(values["Columns"])
    if not image and rows and columns:
        return None  # truncated (or deflated): pydicom's path reports it
    plane = [
        as_floats(values["ImagePositionPatient"], 3),
        as_floats(values["ImageOrientationPatient"], 6),
        as_floats(values["PixelSpacing"], 2),
    ]
    if plane[0] is None and plane[2] is None:
        plane[2] = as_floats(values["ImagerPixelSpacing"], 2)
    return {
        "patient_id": _text(values["PatientID"]),
        "study_uid": _text(values["StudyInstanceUID"]),
        "series_uid": _text(values["SeriesInstanceUID"]),
        "modality": _text(values["Modality"]),
        "manufacturer": _text(values["Manufacturer"]),
        "image": image,
        "rows": rows,
        "columns": columns,
        "instance_number": as_int(values["InstanceNumber"]),
        "frames": as_int(values["NumberOfFrames"]) or 1,
        "per_frame": False,
        "planes": [plane],
    }


def _text(value: Any) -> str:
    """A string value, '' when absent or empty (as scan.py's ``_text``)."""
    return str(value or "").strip()


def as_floats(value: Any, count: int) -> list[float] | None:
    """A numeric element as exactly ``count`` finite floats, or None (scan.py uses it too)."""
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(map(math.isfinite, numbers)) else None


def as_int(value: Any) -> int | None:
    """An integer element as an int, or None (scan.py uses it too)."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
