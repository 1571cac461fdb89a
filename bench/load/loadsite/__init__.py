"""The small Django project the load benchmark serves (bench/load/run.py)."""
