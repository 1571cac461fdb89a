"""The detectors: each sees blocking work on a loop thread in its own way."""
