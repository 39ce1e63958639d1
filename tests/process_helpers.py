"""Process state for the tests that kill launchers and workers."""
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an unreaped zombie has ended)."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
