"""The SEC benchmark tool's smoke run: every table and row, and baseline/ours agreement."""
import importlib.util
import math
from pathlib import Path

import torch

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[2]


def load_tool():
    path = ROOT / 'tools' / 'analysis_tools' / 'benchmark_sec.py'
    spec = importlib.util.spec_from_file_location('benchmark_sec', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_tables_rows_and_agreement(tmp_path):
    tool = load_tool()
    out = tmp_path / 'results.md'
    # Another tool's section in the same file must survive the rewrite.
    other = '<!-- BEGIN sec_connector -->\nconnector table\n<!-- END sec_connector -->'
    begin, end = harness.begin_marker(tool.SECTION), harness.end_marker(tool.SECTION)
    out.write_text(f'# Benchmarks\n\n{other}\n\n{begin}\nstale\n{end}\n')
    threads = torch.get_num_threads()
    try:  # one thread: the smoke run's timings are meaningless, and it stays fast under load
        results = tool.main(['--quick', '--repeats', '1', '--warmup', '0', '--out', str(out),
                             '--threads', '1'])
    finally:
        torch.set_num_threads(threads)

    # (a) 4 stage shapes + the detection shape, each for the bare attention and the layer.
    rows = results['a']
    assert [(r['shape'], r['part']) for r in rows] == [
        (shape, part) for shape in ['stage 1 @ 64x64', 'stage 2 @ 64x64', 'stage 3 @ 64x64',
                                    'stage 4 @ 64x64', 'stage 1 @ 128x192']
        for part in ('attention', 'layer')]
    assert [r['clusters'] for r in rows[::2]] == [32, 8, 2, -1, 32]
    for row in rows:  # the appendix code and ours compute the same function
        assert row['rel_err_out'] < 1e-5 and row['rel_err_grad'] < 1e-5, row
        assert row['rel_err_64'] < 1e-12, row
        assert row['base_fwd_ms'] > 0 and row['ours_fwdbwd_ms'] > 0
        assert math.isclose(row['fwd_speedup'], row['base_fwd_ms'] / row['ours_fwd_ms'])
        # The bound: the appendix time over the shared convolutions' time alone.
        assert row['convs_fwd_ms'] > 0 and row['convs_fwdbwd_ms'] > 0
        assert math.isclose(row['max_fwdbwd_speedup'],
                            row['base_fwdbwd_ms'] / row['convs_fwdbwd_ms'])
    # (b) every clustered shape. Whole classifiers against Swin-T and the two cluster modes
    # as the input grows are benchmark.py's (tests/test_tools/test_benchmark.py).
    assert [r['shape'] for r in results['b']] == [
        'stage 1 @ 64x64', 'stage 2 @ 64x64', 'stage 3 @ 64x64', 'stage 1 @ 128x192']
    assert len(results['targets']) == 4
    # CPU accounting per table: every table ran, so each took some user time.
    assert sorted(results['cpu']) == list('ab')
    assert all(use['user_s'] > 0 and use['kernel_s'] >= 0 and use['faults'] >= 0
               for use in results['cpu'].values())

    text = out.read_text()
    assert other in text and 'stale' not in text
    section = text[text.index(begin):text.index(end)]
    for title in ['(a) SEC attention layer', '(b) Cost of clustering', 'Targets', '1 CPU threads',
                  'torch ' + torch.__version__, 'CPU time per table, user / kernel']:
        assert title in section
    assert section.count('| stage 1 @ 64x64 |') == 3  # two rows in (a), one in (b)
