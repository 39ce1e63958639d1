"""Every script of tools/ answers --help with its usage and exit status 0 (the scripts parse
their arguments before the heavy imports, so this is quick)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'tools').rglob('*.py'))


def test_every_tool_is_listed():
    assert 'tools/analysis_tools/benchmark.py' in SCRIPTS and len(SCRIPTS) >= 12


@pytest.mark.parametrize('script', SCRIPTS)
def test_help(script):
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f'usage: {Path(script).name}'), result.stdout[:300]
