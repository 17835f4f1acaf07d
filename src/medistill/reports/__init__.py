"""Run reports: ``report.html`` (self-contained) and ``report.md`` plus PNG figures.

Use :func:`write_report`; see :mod:`medistill.reports.report` for the ``results`` schema.
matplotlib is only imported when a report is written.
"""

from medistill.reports.report import write_report

__all__ = ["write_report"]
