from pathlib import Path

import pytest
from tool_helpers import load_tool

from benchmarks import harness

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis_tools' / 'benchmark_connector.py'


@pytest.fixture(scope='module')
def bench():
    return load_tool('analysis_tools/benchmark_connector.py')


def test_section_is_replaced_and_other_sections_kept(bench, tmp_path):
    results = tmp_path / 'benchmarks' / 'results.md'
    harness.write_section(results, bench.SECTION, 'first table')
    assert results.read_text().startswith('# Benchmarks\n')
    # Another engineer's sections, before and after ours.
    results.write_text('# Benchmarks\n\n## SECViT throughput\nkeep me\n\n' +
                       results.read_text().split('\n', 2)[2] + '\n## Later section\nme too\n')
    harness.write_section(results, bench.SECTION, 'second table')
    text = results.read_text()
    assert text.count(harness.begin_marker(bench.SECTION)) == 1
    assert text.count(harness.end_marker(bench.SECTION)) == 1
    assert 'second table' in text and 'first table' not in text
    assert 'keep me' in text and 'me too' in text
    assert text.index('keep me') < text.index('second table') < text.index('me too')


def test_acceptance_verdict(bench):
    def row(g, ms, hidden=512, layers=4):
        return dict(size='m', num_tokens=g, prefill_ms=ms, hidden_size=hidden, num_layers=layers)

    assert 'met' in bench.acceptance([row(576, 10.), row(144, 4.)], 64)[0]
    assert 'NOT met' in bench.acceptance([row(576, 10.), row(144, 6.)], 64)[0]
    assert 'not applicable' in bench.acceptance([row(576, 10., 256), row(144, 4., 256)], 64)[0]


def test_tiny_run_writes_the_table(bench, tmp_path, monkeypatch):
    # An even smaller size than the tool's 'tiny', to keep the test quick.
    monkeypatch.setitem(bench.SIZES, 'micro', dict(
        vision=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        llm=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2)))
    output = tmp_path / 'results.md'
    bench.main(['--sizes', 'micro', '--tokens', '576', '144', '--repeats', '1', '--warmup', '0',
                '--prompt-length', '8', '--output', str(output)])
    text = output.read_text()
    rows = [line for line in text.splitlines() if line.startswith('| micro')]
    assert len(rows) == 2
    # LLM tokens: 8 prompt tokens + 576 (MLP) or 144 (SEC) image tokens.
    assert rows[0].split('|')[2:4] == [' 576 (MLP) ', ' 584 ']
    assert rows[1].split('|')[2:4] == [' 144 (SEC) ', ' 152 ']


def test_bad_token_count_is_rejected(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(['--tokens', '600'])
