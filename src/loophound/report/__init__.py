"""``loophound report``: top offenders, folded stacks and an HTML flame graph.

Reads JSON-lines event logs (from the middleware, the demo or the pytest plugin) in
one streaming pass with bounded memory: per group a count, a total and a quantile
sketch; per stack one weight.
"""

from __future__ import annotations

from loophound.report.aggregate import GROUPINGS, Group, Summary, summarize
from loophound.report.reader import Problem, ReportError, read_records

__all__ = [
    "GROUPINGS",
    "Group",
    "Problem",
    "ReportError",
    "Summary",
    "read_records",
    "summarize",
]
