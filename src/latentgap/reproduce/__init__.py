"""Reproduce the papers' tables: ``latentgap reproduce TABLE``.

- :mod:`~.tables`: the tables as data (cells, the run each cell evaluates, paper numbers) and
  the compute budgets (``smoke``, ``cpu``, ``full``);
- :mod:`~.harness`: trains and evaluates cell by cell, resumably, into ``results.json``;
- :mod:`~.markdown`: ``results.md``, ours beside the paper's.
"""

from latentgap.reproduce.harness import build_config, machine_info, reproduce, select_cells
from latentgap.reproduce.markdown import render_markdown
from latentgap.reproduce.tables import BUDGETS, TABLES, Budget, Cell, RunSpec, Table, TrainSpec

__all__ = [
    "BUDGETS",
    "TABLES",
    "Budget",
    "Cell",
    "RunSpec",
    "Table",
    "TrainSpec",
    "build_config",
    "machine_info",
    "render_markdown",
    "reproduce",
    "select_cells",
]
