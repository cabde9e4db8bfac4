"""Keeping protected health information out of what medimg writes: pseudonyms for run folders."""
