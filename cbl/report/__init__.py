"""Sweep reports: ``cbl-search report EXPERIMENT_DIR`` (see :mod:`cbl.report.build`).

Modules: ``tables`` (results, marginals, importance), ``figures`` (PNG plots),
``models`` (eval scores and dev embeddings of a checkpoint, TensorBoard
projector), ``document`` (Markdown and self-contained HTML), ``build`` (the
report itself).
"""

from cbl.report.build import PROJECTOR_DIR, REPORT_DIR, ReportFiles, build_report

__all__ = ["PROJECTOR_DIR", "REPORT_DIR", "ReportFiles", "build_report"]
