"""Every fusion but base, one family per module, each registered with backbones.item_embedding.register_fusion.

Each module here is imported, in file-name order (the order of --fusion's choices): a new file is a new fusion.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
