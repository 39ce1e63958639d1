import re

import pytest
import torch

from sec_mm.converters import convert_secvit_state_dict, infer_secvit_arch
from sec_mm.checkpoint import CheckpointMismatchError, extract_state_dict, load_pretrained_into


def released_state_dict_from_key_list(path):
    """A released-format state dict with the key names and shapes of a reference key list."""
    state = {}
    for line in path.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        key, shape = line.split('\t')
        shape = tuple(int(n) for n in re.findall(r'\d+', shape))
        if key.endswith('RoPE.angle'):
            head_dims = 2 * shape[0]
            state[key] = (1 / 10000**torch.linspace(0, 1, head_dims // 4)).repeat_interleave(2)
        else:
            state[key] = torch.zeros(shape)
    return state


@pytest.mark.parametrize('arch', ['t', 's', 'b', 'l'])
def test_every_released_key_converts(arch, reference_dir):
    from sec_mm.models import SECViT
    released = released_state_dict_from_key_list(
        reference_dir / f'official_secvit_{arch}_keys.tsv')
    converted, inferred = convert_secvit_state_dict(released)
    expected = SECViT.arch_zoo[arch]
    for key in ('embed_dims', 'depths', 'num_heads', 'layer_scales'):
        assert inferred[key] == expected[key], key
    assert inferred['num_classes'] == 1000 and inferred['head_channels'] == 1024
    rope_keys = [k for k in released if k.endswith('RoPE.angle')]
    assert len(converted) == len(released) - len(rope_keys)
    assert converted['head.fc.weight'].shape == (1000, 1024)


def test_unknown_keys_are_named(reference_dir):
    released = released_state_dict_from_key_list(reference_dir / 'official_secvit_t_keys.tsv')
    released['layers.0.blocks.0.attn.extra.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r'does not know.*attn\.extra\.weight'):
        convert_secvit_state_dict(released)


def test_missing_keys_are_named(reference_dir):
    released = released_state_dict_from_key_list(reference_dir / 'official_secvit_t_keys.tsv')
    del released['layers.2.blocks.4.ffn.dwconv.weight']
    with pytest.raises(CheckpointMismatchError,
                       match=r'Missing keys.*stages\.2\.blocks\.4\.ffn\.dwconv\.weight'):
        convert_secvit_state_dict(released)


def test_wrong_rope_table_is_reported(reference_dir):
    released = released_state_dict_from_key_list(reference_dir / 'official_secvit_t_keys.tsv')
    released['layers.1.RoPE.angle'] = released['layers.1.RoPE.angle'] * 2
    with pytest.raises(CheckpointMismatchError, match=r'RoPE tables.*layers\.1\.RoPE\.angle'):
        convert_secvit_state_dict(released)


def test_not_a_secvit_checkpoint():
    with pytest.raises(CheckpointMismatchError, match='Not a SECViT release'):
        infer_secvit_arch({'conv.weight': torch.zeros(1)})


def test_extract_state_dict_variants():
    weights = {'module.a': torch.zeros(1)}
    assert list(extract_state_dict({'model': weights})) == ['a']
    assert list(extract_state_dict({'state_dict': {'b': torch.ones(1)}})) == ['b']
    assert list(extract_state_dict({'model': {}, 'model_ema': {'c': torch.ones(1)}},
                                   use_ema=True)) == ['c']
    with pytest.raises(CheckpointMismatchError, match='EMA weights'):
        extract_state_dict({'model': weights}, use_ema=True)


def tiny_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    model.extra = torch.nn.Linear(3, 1)  # a part the source model does not have
    return model


def test_load_pretrained_into_layouts_prefix_adapt_and_optional_keys(tmp_path):
    source = tiny_model()
    weights = {k: torch.randn_like(v) for k, v in source.state_dict().items()
               if not k.startswith('extra.')}
    # A whole-model OpenMMLab file with the keys under `backbone.` and renamed ...
    mm_file = tmp_path / 'mm.pth'
    torch.save({'state_dict': {f'backbone.old{k}': v for k, v in weights.items()}}, mm_file)
    model, seen = tiny_model(), []

    def adapt(state):
        seen.append(sorted(state))
        return {k[len('old'):]: v for k, v in state.items()}

    fresh_extra = model.extra.weight.detach().clone()
    load_pretrained_into(model, str(mm_file), prefix='backbone', adapt=adapt,
                         optional_prefixes=['extra.'])
    assert seen == [sorted(f'old{k}' for k in weights)]  # adapt sees the prefix stripped
    for key, value in weights.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    torch.testing.assert_close(model.extra.weight, fresh_extra)  # optional: kept as it was
    # ... and a release-layout file (`model`, DataParallel `module.` keys).
    release_file = tmp_path / 'release.pth'
    torch.save({'model': {f'module.{k}': v for k, v in weights.items()}}, release_file)
    model = tiny_model()
    load_pretrained_into(model, str(release_file), optional_prefixes=['extra.'])
    torch.testing.assert_close(model[0].weight, weights['0.weight'])


def test_load_pretrained_into_names_the_file_the_keys_and_the_fix(tmp_path):
    path = tmp_path / 'ckpt.pth'
    weights = {k: v for k, v in tiny_model().state_dict().items() if k != '1.bias'}
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in weights.items()}}, path)
    with pytest.raises(CheckpointMismatchError,
                       match=rf"No key of {re.escape(str(path))} starts with prefix 'neck\.'"
                       r'(.|\n)*backbone\.(.|\n)*Fix the `prefix`'):
        load_pretrained_into(tiny_model(), str(path), prefix='neck.')
    with pytest.raises(CheckpointMismatchError,
                       match=rf'Sequential \({re.escape(str(path))}\)(.|\n)*Missing keys '
                       r'\(1\): 1\.bias\nCheck the arch and the `prefix`'):
        load_pretrained_into(tiny_model(), str(path), prefix='backbone.')
    with pytest.raises(CheckpointMismatchError, match=r"add prefix='backbone\.'"):
        load_pretrained_into(tiny_model(), str(path))
