"""Scripts of ``tools/`` (not a package) loaded as modules, to test their functions."""
import importlib.util
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def load_tool(relative_path: str) -> ModuleType:
    """``tools/<relative_path>`` as a module, e.g. ``load_tool('misc/make_toy_datasets.py')``."""
    path = TOOLS / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
