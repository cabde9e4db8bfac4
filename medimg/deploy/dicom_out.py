"""DICOM results that reference their source instances: SEG (highdicom) and TID 1500 SR.

Both copy the patient and study modules from the source (that is what links them to the
study in a PACS) and carry the model's identity: algorithm name = experiment, version =
the first 16 hex digits of the weights' SHA-256.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from medimg.export.card import threshold_for
from medimg.files import write_atomic

# highdicom logs every copied module at INFO level.
logging.getLogger("highdicom").setLevel(logging.WARNING)
MANUFACTURER = "medimg"
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
# TID 1500 "procedure reported" by source modality; anything else: imaging procedure.
PROCEDURES = {
    "CT": hd.sr.CodedConcept("77477000", "SCT", "Computerized tomography"),
    "MR": hd.sr.CodedConcept("113091000", "SCT", "Magnetic resonance imaging"),
}
IMAGING = hd.sr.CodedConcept("363679005", "SCT", "Imaging")
# Type 2 attributes of the Patient and General Study modules that highdicom copies from the
# source: de-identified exports often drop them, and highdicom then fails. The standard lets a
# Type 2 attribute be present and empty when unknown, so they are added empty, never invented.
TYPE2_IDENTIFICATION = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def with_type2_attributes(sources: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source instances with absent identification Type 2 attributes added empty.

    The user's datasets are never modified; present values (even empty ones) are kept as they
    are, and nothing is copied from elsewhere: an absent PatientID stays unknown (empty).
    """
    completed = []
    for source in sources:
        missing = [keyword for keyword in TYPE2_IDENTIFICATION if keyword not in source]
        if not missing:
            completed.append(source)
            continue
        dataset = copy.deepcopy(source)
        for keyword in missing:
            setattr(dataset, keyword, "")
        completed.append(dataset)
    return completed


def coded(code: Mapping[str, str]) -> hd.sr.CodedConcept:
    """A highdicom concept from a card code ``{scheme, value, meaning}``."""
    return hd.sr.CodedConcept(code["value"], code["scheme"], code["meaning"])


def _version() -> str:
    try:
        return metadata.version("medimg")
    except metadata.PackageNotFoundError:
        return "unknown"


def _algorithm(card: Mapping[str, Any]) -> tuple[str, str]:
    """Algorithm name and version for DICOM (experiment, weights hash prefix)."""
    return str(card.get("experiment", "medimg"))[:64], str(card.get("weights_sha256", ""))[:16]


def segmentation(
    sources: Sequence[Dataset], labels: np.ndarray, card: Mapping[str, Any]
) -> hd.seg.Segmentation:
    """A binary DICOM SEG with one segment per foreground label, one frame per source slice.

    Args:
        sources: source instances in slice order (``labels[..., k]`` lies on ``sources[k]``).
        labels: label map (X, Y, Z) on the source grid: X = column, Y = row, Z = slice.
        card: the model card (labels with codes, experiment, weights hash).
    """
    sources = with_type2_attributes(sources)
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(np.uint8)
    name, version = _algorithm(card)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, family=codes.DCM.ArtificialIntelligence, version=version or "unknown"
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=entry["index"],
            segment_label=entry["name"][:64],
            segmented_property_category=coded(entry["category"]),
            segmented_property_type=coded(entry["code"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for entry in card["labels"][1:]
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=name,
        software_versions=_version(),
        device_serial_number=version or "unknown",
        series_description=f"{name} segmentation"[:64],
        # Every source slice gets a frame, so the SEG lines up frame by frame with the series.
        omit_empty_frames=False,
    )
    if "ImagePositionPatient" not in sources[0]:
        # A projection source (DX, CR): General Image's Type 2C PatientOrientation is then
        # required; highdicom does not copy it.
        seg.PatientOrientation = sources[0].get("PatientOrientation", "")
    return seg


def structured_report(
    sources: Sequence[Dataset], probabilities: Sequence[float], card: Mapping[str, Any]
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report: per finding, its probability and present/absent.

    Binary classification reports the positive label (the last one) with its probability
    and ``Present`` when it reaches the card's operating point; multi-label reports every
    label against its own threshold; multi-class reports every label's probability and
    ``Present`` for the most probable. Every source instance is
    referenced as the image the finding was made on.
    """
    sources = with_type2_attributes(sources)
    name, version = _algorithm(card)
    labels = card["labels"]
    if card.get("multilabel"):
        reported = [(labels[i], float(p)) for i, p in enumerate(probabilities)]
        present = [p >= threshold_for(card, entry["name"]) for entry, p in reported]
    elif len(probabilities) == 1:
        reported = [(labels[-1], float(probabilities[0]))]
        present = [reported[0][1] >= threshold_for(card, "positive")]
    else:
        reported = [(labels[i], float(p)) for i, p in enumerate(probabilities)]
        best = int(np.argmax(probabilities))
        present = [i == best for i in range(len(reported))]
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version or "unknown")
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=name, manufacturer_name=MANUFACTURER, model_name=name
        ),
    )
    images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources]
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=entry["name"]),
            finding_type=coded(entry["code"]),
            algorithm_id=algorithm,
            source_images=images,
            # A non-finite probability (from odd source values) cannot be a DICOM numeric
            # value: the finding is reported without it rather than crashing the writer.
            measurements=[
                hd.sr.Measurement(
                    name=codes.DCM.Probability,
                    value=round(probability, 6),
                    unit=codes.UCUM.NoUnits,
                    algorithm_id=algorithm,
                )
            ]
            if math.isfinite(probability)
            else [],
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(
                    name=coded(entry["code"]),
                    value=codes.SCT.Present if is_present else codes.SCT.Absent,
                )
            ],
        )
        for (entry, probability), is_present in zip(reported, present, strict=True)
    ]
    modality = str(sources[0].get("Modality", ""))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURES.get(modality, IMAGING),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"{name} findings"[:64],
    )


def save_dicom(dataset: Dataset, path: str | Path) -> Path:
    """Write a DICOM file (with its file meta), atomically."""
    return write_atomic(path, lambda tmp: dataset.save_as(tmp, enforce_file_format=True))
