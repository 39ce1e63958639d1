"""Which keys of the merged configs differ between two checkouts.

    python tools/misc/diff_configs.py OLD_CHECKOUT NEW_CHECKOUT [--configs-dir configs]
        [--exclude configs/multimodal ...] [--only-changed] [--width 200]

Every ``*.py`` config under ``--configs-dir`` of each checkout (files inside ``_base_``
folders are bases, not configs, and are skipped) is merged with
``mmengine.Config.fromfile(path).to_dict()``, all ``_base_`` files and ``mmdet::`` /
``mmseg::`` / ``mmpretrain::`` bases resolved. Each checkout is read in its own Python process
with the checkout first on ``PYTHONPATH``, so ``custom_imports`` import that checkout's
``sec_mm`` and the two never mix.

Printed per config: ``unchanged``, or every key that changed (``~ key: old -> new``), appeared
(``+ key: new``) or went (``- key: old``), keys written as ``a.b[2].c``; in a list of dicts that
gained, lost or reordered items (a pipeline with a transform inserted) the items that went and
came; any other list that changed length, whole.
Values are cut at ``--width`` characters. A summary line ends the output. The exit status is 1
when a config cannot be read in either checkout, else 0 (differences are not errors).
"""
import argparse
import difflib
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

MISSING = object()


def find_configs(root: Path, configs_dir: str, exclude: List[str]) -> List[str]:
    """Config paths relative to ``root``, sorted; ``_base_`` folders and ``exclude`` left out."""
    found = []
    for path in sorted((root / configs_dir).rglob('*.py')):
        rel = path.relative_to(root)
        if '_base_' in rel.parts or '__pycache__' in rel.parts:
            continue
        if any(rel.as_posix() == e.rstrip('/') or rel.as_posix().startswith(e.rstrip('/') + '/')
               for e in exclude):
            continue
        found.append(rel.as_posix())
    return found


def _picklable(value: Any) -> Any:
    """``value`` with everything pickle cannot carry across processes replaced by its repr."""
    if isinstance(value, dict):
        return {k: _picklable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_picklable(v) for v in value)
    try:
        pickle.dumps(value)
        return value
    except Exception:  # noqa: BLE001 (types, functions, modules: compared by their repr)
        return f'<{value!r}>'


def dump(root: Path, configs: List[str], out: Path) -> None:
    """Merge ``configs`` of ``root`` (this process imports ``root``'s package) into ``out``."""
    from mmengine.config import Config
    merged: Dict[str, Any] = {}
    os.chdir(root)
    for rel in configs:
        try:
            merged[rel] = ('ok', _picklable(Config.fromfile(str(root / rel)).to_dict()))
        except Exception as error:  # noqa: BLE001 (reported per config, not fatal)
            merged[rel] = ('error', f'{type(error).__name__}: {error}')
    with open(out, 'wb') as f:
        pickle.dump(merged, f)


def merge_in_subprocess(root: Path, configs: List[str]) -> Dict[str, Tuple[str, Any]]:
    """Run :func:`dump` for ``root`` in a fresh interpreter whose ``sec_mm`` is ``root``'s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'merged.pkl'
        listing = Path(tmp) / 'configs.txt'
        listing.write_text('\n'.join(configs))
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join([str(root)] + [
            p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
        done = subprocess.run(
            [sys.executable, __file__, '--dump', str(root), str(listing), str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise RuntimeError(f'Reading the configs of {root} failed:\n{done.stdout[-4000:]}')
        with open(out, 'rb') as f:
            return pickle.load(f)


def _short(value: Any, width: int) -> str:
    text = repr(value)
    return text if width <= 0 or len(text) <= width else text[:width - 3] + '...'


def _types(items) -> List[Any]:
    """The ``type`` of every dict item (a pipeline's transforms), None for other items."""
    return [item.get('type') if isinstance(item, dict) else None for item in items]


def _sequence_diff(old, new, path: str) -> List[Tuple[str, str, Any, Any]]:
    """Items removed from ``old`` (at their old index) and added in ``new`` (new index)."""
    matcher = difflib.SequenceMatcher(a=[repr(v) for v in old], b=[repr(v) for v in new],
                                      autojunk=False)
    changes = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == 'equal':
            continue
        changes.extend(('-', f'{path}[{i}]', old[i], MISSING) for i in range(i1, i2))
        changes.extend(('+', f'{path}[{j}]', MISSING, new[j]) for j in range(j1, j2))
    return changes


def diff(old: Any, new: Any, path: str = '') -> List[Tuple[str, str, Any, Any]]:
    """``(kind, key, old, new)`` for every difference; kind is ``~``, ``+`` or ``-``.

    Lists are compared item by item when they have the same length and the same ``type`` at
    every position; otherwise lists of dicts (a transform inserted, removed or moved) as
    sequences: the items that went (old index) and came (new index); other lists whole.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f'{path}.{key}' if path else str(key)
            if key not in old:
                changes.append(('+', sub, MISSING, new[key]))
            elif key not in new:
                changes.append(('-', sub, old[key], MISSING))
            else:
                changes.extend(diff(old[key], new[key], sub))
        return changes
    if isinstance(old, (list, tuple)) and type(old) is type(new):
        if len(old) == len(new) and _types(old) == _types(new):
            changes = []
            for i, (a, b) in enumerate(zip(old, new)):
                changes.extend(diff(a, b, f'{path}[{i}]'))
            return changes
        if any(isinstance(v, dict) for v in (*old, *new)):
            return _sequence_diff(old, new, path)
    if type(old) is type(new) and old == new:
        return []
    return [('~', path, old, new)]


def report(old: Dict[str, Tuple[str, Any]], new: Dict[str, Tuple[str, Any]],
           only_changed: bool = False, width: int = 200) -> Tuple[List[str], Dict[str, int]]:
    """The printed lines and the counts of the summary."""
    lines: List[str] = []
    counts = dict(unchanged=0, changed=0, added=0, removed=0, errors=0)
    for rel in sorted(set(old) | set(new)):
        if rel not in old:
            counts['added'] += 1
            lines.append(f'{rel}: only in the new checkout')
            continue
        if rel not in new:
            counts['removed'] += 1
            lines.append(f'{rel}: only in the old checkout')
            continue
        (old_status, old_cfg), (new_status, new_cfg) = old[rel], new[rel]
        if 'error' in (old_status, new_status):
            counts['errors'] += 1
            for side, status, value in (('old', old_status, old_cfg), ('new', new_status,
                                                                       new_cfg)):
                if status == 'error':
                    lines.append(f'{rel}: cannot be read in the {side} checkout: {value}')
            continue
        changes = diff(old_cfg, new_cfg)
        if not changes:
            counts['unchanged'] += 1
            if not only_changed:
                lines.append(f'{rel}: unchanged')
            continue
        counts['changed'] += 1
        lines.append(f'{rel}: {len(changes)} key(s) changed')
        for kind, key, a, b in changes:
            if kind == '~':
                lines.append(f'    ~ {key}: {_short(a, width)} -> {_short(b, width)}')
            elif kind == '+':
                lines.append(f'    + {key}: {_short(b, width)}')
            else:
                lines.append(f'    - {key}: {_short(a, width)}')
    return lines, counts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print which keys of the merged configs differ between two checkouts.')
    parser.add_argument('old', type=Path, help='the checkout to compare against')
    parser.add_argument('new', type=Path, help='the checkout with the changes')
    parser.add_argument('--configs-dir', default='configs',
                        help='folder of the configs inside each checkout (default: configs)')
    parser.add_argument('--exclude', nargs='*', default=[],
                        help='config files or folders (relative to the checkout) to skip')
    parser.add_argument('--only-changed', action='store_true',
                        help='leave the unchanged configs out of the listing')
    parser.add_argument('--width', type=int, default=200,
                        help='cut printed values at this many characters; 0: never (default 200)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == '--dump':
        root, listing, out = sys.argv[2:5]
        dump(Path(root), Path(listing).read_text().split(), Path(out))
        return 0
    args = parse_args(argv)
    merged = []
    for root in (args.old, args.new):
        root = root.resolve()
        if not (root / args.configs_dir).is_dir():
            raise SystemExit(f'{root / args.configs_dir} is not a folder: pass the root of a '
                             'checkout (the folder that holds configs/).')
        merged.append(merge_in_subprocess(root, find_configs(root, args.configs_dir,
                                                             args.exclude)))
    lines, counts = report(*merged, only_changed=args.only_changed, width=args.width)
    print('\n'.join(lines))
    total = sum(counts.values())
    print(f'\n{total} configs: {counts["unchanged"]} unchanged, {counts["changed"]} changed, '
          f'{counts["added"]} only new, {counts["removed"]} only old, '
          f'{counts["errors"]} unreadable')
    return 1 if counts['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
