"""Running exported models on DICOM/NIfTI input: DICOM SEG/SR results, PACS over DICOMweb."""
