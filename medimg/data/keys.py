"""Names of the fields a batch carries, spelled once."""

IMAGE = "image"
AFFINE = "affine"
LABEL = "label"
MASK = "mask"
CASE_ID = "case_id"
PATIENT_ID = "patient_id"
COVARIATES = "covariates"
