"""Training: the trainer, checkpoints, run directories and distributed helpers.

The package is also callable: ``latentgap.train(config, out)`` is :func:`latentgap.api.train`
(the subpackage and the entry point share the name, so the module object forwards calls).
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from latentgap.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
