"""What a checkpoint's pickle names, read without unpickling it."""
import pickletools
import zipfile


def pickled_globals(path) -> set:
    """``module.name`` of every global a torch zip checkpoint's pickle names."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.add('.'.join(strings[-2:]))
    return found
