"""The import structure of ``sec_mm`` (docs/architecture.md): no import cycle, and each layer
imports only from the layers to its left.

The graph is read from the source with :mod:`ast`, not by importing, so it covers every
import: module-level and inside functions (which Python only runs later, and which is where a
cycle usually hides), under ``try`` and ``if``, relative ones resolved. Importing
``a.b.c`` runs the ``__init__`` of ``a.b`` first, so those count as edges too, except the
packages that contain the importer (they are already being imported).
"""
import ast
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / 'sec_mm'
MM_PACKAGES = ('mmcv', 'mmdet', 'mmengine', 'mmpretrain', 'mmseg')

Graph = Dict[str, Set[str]]


def module_names(package_dir: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    names = {}
    for path in sorted(package_dir.rglob('*.py')):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix('').parts]
        if parts[-1] == '__init__':
            parts.pop()
        names['.'.join(parts)] = path
    return names


def imported_names(module: str, path: Path) -> Set[str]:
    """Absolute dotted names of every import in a file (``from a import b`` gives ``a.b``,
    which is ``a``'s attribute ``b`` or its submodule)."""
    is_package = path.name == '__init__.py'
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                package = module if is_package else module.rpartition('.')[0]
                for _ in range(node.level - 1):
                    package = package.rpartition('.')[0]
                base = f'{package}.{base}' if base else package
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names if alias.name != '*')
    return names


def import_graph(package_dir: Path) -> Graph:
    """Module -> the package's modules that importing it runs (directly)."""
    modules = module_names(package_dir)
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(module, path):
            parts = name.split('.')
            # `from a import b`: the submodule a.b if there is one, else the module a.
            while parts and '.'.join(parts) not in modules:
                parts.pop()
            # ... after the __init__ of each package on the way, unless it contains us.
            for depth in range(1, len(parts) + 1):
                target = '.'.join(parts[:depth])
                if target in modules and not (module + '.').startswith(target + '.'):
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: Graph) -> Optional[List[str]]:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None if it has none."""
    done: Set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(graph[root]))]
        while stack:
            child = next(stack[-1], None)
            if child is None:  # every child of path[-1] explored
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                stack.pop()
                continue
            if child in on_path:
                return path[path.index(child):] + [child]
            if child in done or child not in graph:
                continue
            path.append(child)
            on_path.add(child)
            stack.append(iter(sorted(graph[child])))
    return None


# --- the checks, on the package ---------------------------------------------------------------

@pytest.fixture(scope='module')
def graph() -> Graph:
    return import_graph(PACKAGE_DIR)


@pytest.fixture(scope='module')
def imports() -> Dict[str, Set[str]]:
    """Module -> every absolute name it imports, inside the package or not."""
    return {module: imported_names(module, path)
            for module, path in module_names(PACKAGE_DIR).items()}


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + '.')


def offenders(imports: Dict[str, Set[str]], importers: str, forbidden) -> List[str]:
    return sorted(f'{module} imports {name}' for module, names in imports.items()
                  if in_package(module, importers) for name in names if forbidden(name))


def test_the_graph_covers_the_package(graph):
    # A guard against a graph that is empty by mistake (which would have no cycle).
    assert {'sec_mm', 'sec_mm.ops', 'sec_mm.models.backbones.secvit',
            'sec_mm.checkpoint.strict', 'sec_mm.engine.launch',
            'sec_mm.converters.secvit_release'} <= set(graph)
    assert 'sec_mm.checkpoint' in graph['sec_mm.models.backbones.secvit']
    assert 'sec_mm.models.backbones.secvit' in graph['sec_mm.models.backbones']


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_ops_import_only_ops_and_torch(imports):
    bad = offenders(imports, 'sec_mm.ops', lambda name: (
        (in_package(name, 'sec_mm') and not in_package(name, 'sec_mm.ops'))
        or name.split('.')[0] in MM_PACKAGES))
    assert not bad, 'sec_mm.ops must import only ops, torch and the standard library:\n' + \
        '\n'.join(bad)


def test_layers_import_no_models_or_registration(imports):
    above = ('sec_mm.models.backbones', 'sec_mm.models.heads', 'sec_mm.models.connectors',
             'sec_mm.registry', 'sec_mm.converters')
    bad = offenders(imports, 'sec_mm.models.layers',
                    lambda name: any(in_package(name, p) for p in above))
    assert not bad, 'sec_mm.models.layers sits below the models:\n' + '\n'.join(bad)


def test_models_import_no_converter_or_tools(imports):
    bad = offenders(imports, 'sec_mm.models', lambda name: (
        in_package(name, 'sec_mm.converters') or in_package(name, 'tools')))
    assert not bad, ('models load converted files; the converters and tools sit above '
                     'them:\n' + '\n'.join(bad))


def test_models_never_import_the_engine(imports):
    bad = offenders(imports, 'sec_mm.models', lambda name: in_package(name, 'sec_mm.engine'))
    assert not bad, 'the engine runs the models; they never import it:\n' + '\n'.join(bad)


def test_checkpoint_and_utils_import_no_models_or_engine(imports):
    above = ('sec_mm.models', 'sec_mm.converters', 'sec_mm.registry', 'sec_mm.engine')
    for package in ('sec_mm.checkpoint', 'sec_mm.utils'):
        bad = offenders(imports, package, lambda name: any(in_package(name, p) for p in above))
        assert not bad, f'the models import {package}, so it imports no model or engine:\n' + \
            '\n'.join(bad)


# --- the checks can fail ----------------------------------------------------------------------

def test_find_cycle_on_hand_built_graphs():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'a': {'b', 'c'}, 'b': {'d'}, 'c': {'d'}, 'd': set()}) is None  # diamond
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'b'}}) == ['b', 'c', 'b']
    assert find_cycle({'a': {'a'}}) == ['a', 'a']
    assert find_cycle({'x': set(), 'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def write_package(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / 'pkg'


def test_graph_resolves_relative_and_function_level_imports(tmp_path):
    """The cycle that sec_mm had (a model importing a helper that imports the model back
    inside a function) is found."""
    package = write_package(tmp_path, {
        'pkg/__init__.py': 'from . import models\n',
        'pkg/models/__init__.py': 'from .net import Net\n',
        'pkg/models/net.py': 'from ..utils.ckpt import load\n',
        'pkg/utils/__init__.py': '',
        'pkg/utils/ckpt.py': """
            import os

            def expected_keys():
                from pkg.models.net import Net
                return Net
            """,
    })
    graph = import_graph(package)
    assert graph['pkg'] == {'pkg.models'}
    assert graph['pkg.models.net'] == {'pkg.utils', 'pkg.utils.ckpt'}
    # pkg.models.net runs the __init__ of pkg.models, which imports net.
    assert graph['pkg.utils.ckpt'] == {'pkg.models', 'pkg.models.net'}
    assert find_cycle(graph) == ['pkg.models', 'pkg.models.net', 'pkg.utils.ckpt',
                                 'pkg.models']


# Tools and tests use sec_mm's public API: a `_name` of a sec_mm module is free to change.

REPO_DIR = PACKAGE_DIR.parent


def is_private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def private_uses(source: str, modules: Dict[str, Path]) -> List[str]:
    """``_names`` of sec_mm modules that ``source`` imports or reads as attributes.

    Catches ``from sec_mm.x import _y``, and ``m._y`` where ``m`` is bound to a sec_mm module
    (``import sec_mm.x as m``, ``from sec_mm import x as m``, or the ``sec_mm.x._y`` chain).
    """
    tree = ast.parse(source)
    found, module_aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'sec_mm':
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f'{node.module}.{alias.name}')
                elif f'{node.module}.{alias.name}' in modules:
                    module_aliases[alias.asname or alias.name] = f'{node.module}.{alias.name}'
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'sec_mm':
                    module_aliases[alias.asname or alias.name.split('.')[0]] = \
                        alias.name if alias.asname else 'sec_mm'
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in module_aliases:
                found.append('.'.join([module_aliases[value.id], *reversed(chain)]))
    return found


def test_private_use_finder_on_examples():
    modules = module_names(PACKAGE_DIR)
    source = textwrap.dedent("""
        import sec_mm.ops.sec_attention as op
        from sec_mm.ops import dispatch as dense
        from sec_mm.ops.sec_attention import _hidden, sec_order
        import sec_mm
        op._inner(1)
        dense._flag
        sec_mm.ops._thing
        sec_order.__doc__
        sec_mm.__version__
        """)
    assert sorted(private_uses(source, modules)) == sorted([
        'sec_mm.ops.sec_attention._hidden', 'sec_mm.ops.sec_attention._inner',
        'sec_mm.ops.dispatch._flag', 'sec_mm.ops._thing'])


def test_tools_and_tests_use_public_names_only():
    modules = module_names(PACKAGE_DIR)
    offending = []
    for folder in ('tools', 'tests', 'benchmarks'):
        for path in sorted((REPO_DIR / folder).rglob('*.py')):
            offending += [f'{path.relative_to(REPO_DIR)}: {name}'
                          for name in private_uses(path.read_text(), modules)]
    assert not offending, 'private sec_mm names used by tools or tests:\n' + '\n'.join(offending)
