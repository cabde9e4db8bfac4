"""The only layer that reads Hydra configs: builds objects and runs the stages."""
