"""Own networks, models and datasets from outside the library, found again by every command.

Three ways, all recorded so that a run reloads in a new process:

1. **A factory path** ``package.module:attribute`` wherever a registered name is accepted
   (``--arch``, ``--model``, ``--dataset``, ``critic_arch``): the module is imported and the
   attribute used. config.json records the path itself.
2. **``--import MODULE``** on ``latentgap train`` imports a module that registers its own names
   (``ARCHITECTURES.add("tiny", ...)``, ``@MODELS.register("my-vae")``); config.json records the
   module in ``imports`` and every command imports it again before building anything.
3. **An entry point** in the ``latentgap.plugins`` group of an installed package
   (``[project.entry-points."latentgap.plugins"] mynets = "mynets"``): loaded by every command.

Modules are imported from ``sys.path``; the current directory is searched last, so a
``mynets.py`` beside the command works without installing it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from latentgap.errors import ConfigError

ENTRY_POINT_GROUP = "latentgap.plugins"
_loaded_entry_points = False


def is_factory_path(name: object) -> bool:
    """Whether ``name`` looks like ``package.module:attribute``."""
    if not isinstance(name, str) or name.count(":") != 1:
        return False
    module, attr = name.split(":")
    return (
        bool(module)
        and bool(attr)
        and all(p.isidentifier() for p in module.split("."))
        and (all(p.isidentifier() for p in attr.split(".")))
    )


def import_module(name: str) -> Any:
    """Import ``name``; the current directory is tried last. ConfigError if it fails."""
    if not all(p.isidentifier() for p in name.split(".")):
        raise ConfigError(f"--import {name!r}: not a module name (write package.module)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise ConfigError(
                f"cannot import module {name!r} ({err}); install it, add its folder to "
                "PYTHONPATH or run latentgap from that folder"
            ) from None
        raise


def import_modules(names: Iterable[str]) -> None:
    """Import every module in ``names`` (a run's ``imports``), then the installed plugins."""
    load_entry_points()
    for name in names:
        import_module(name)


def resolve(path: str, kind: str) -> Any:
    """The object named by ``package.module:attribute`` (a ConfigError saying which ``kind`` of
    thing was asked for when the module or the attribute is missing)."""
    module_name, attr = path.split(":")
    obj = import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{kind} {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def load_entry_points() -> None:
    """Import the modules of the ``latentgap.plugins`` entry points (once per process)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must say which it is
            raise ConfigError(
                f"plugin {ep.name!r} ({ep.value}) of entry-point group {ENTRY_POINT_GROUP} "
                f"failed to load: {type(err).__name__}: {err}"
            ) from None
        if callable(obj) and not isinstance(obj, type(sys)):
            obj()  # a "module:function" entry point registers when called


def own_modules(config: Any) -> list[str]:
    """Modules of own code an :class:`~latentgap.config.ExperimentConfig` needs: its
    ``imports`` and the modules of ``package.module:attribute`` names in it."""
    names = [config.model, config.data.name, *config.train.loggers]
    names += [v for k, v in config.model_options.items() if k.endswith("arch")]
    found = list(config.imports)
    for name in names:
        if is_factory_path(name):
            found.append(name.split(":")[0])
    return list(dict.fromkeys(found))
