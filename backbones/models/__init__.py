"""The backbones, one per module, each registered with backbones.registry.register_backbone.

Each module here is imported, in file-name order (the order of --backbone's choices): a new file is a new backbone.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
