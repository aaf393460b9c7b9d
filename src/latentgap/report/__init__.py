"""Reports of runs and reproduced tables: ``latentgap report DIR``.

- :mod:`~.figures`: training curves (matplotlib, imported lazily) and image grids;
- :mod:`~.html`: the self-contained HTML page.
"""

from latentgap.report.html import build_report

__all__ = ["build_report"]
