"""Grafana dashboards for loophound's metrics: build.py writes the JSON files here."""
