"""The SEC-LLaVA configs: stock mmpretrain LLaVA-1.5 plus one model change and local paths."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import sec_mm  # noqa: F401  (what custom_imports does for the Runner)

CONFIG_DIR = Path(__file__).resolve().parents[3] / 'configs' / 'multimodal' / 'sec_llava'
TOKENS = [288, 256, 192, 144]


def load(num_tokens):
    return Config.fromfile(str(CONFIG_DIR / f'llava-7b-v1.5-sec{num_tokens}_vqa.py'))


@pytest.fixture(scope='module')
def stock():
    return get_config('mmpretrain::llava/llava-7b-v1.5_vqa.py')


@pytest.mark.parametrize('num_tokens', TOKENS)
def test_config_is_stock_llava_with_the_sec_connector(num_tokens, stock):
    cfg = load(num_tokens)
    assert cfg.custom_imports == dict(imports=['sec_mm'], allow_failed_imports=False)
    assert cfg.model.type == 'SECLlava'
    assert cfg.model.connector.num_tokens == num_tokens
    assert cfg.model.connector['merge'] == 'interleaved'  # .merge is ConfigDict's method
    # Inherited unchanged from the stock config.
    for key in ('prompt_tmpl', 'mm_hidden_size', 'mm_proj_depth', 'task', 'generation_cfg'):
        assert cfg.model[key] == stock.model[key], key
    assert [t['type'] for t in cfg.test_pipeline] == [t['type'] for t in stock.test_pipeline]
    assert cfg.model.vision_encoder.arch == 'l'
    # Weights from local paths only: nothing that would reach a hub at run time.
    for part in (cfg.model.tokenizer, cfg.model.lang_encoder):
        assert part.local_files_only is True
        assert part.name_or_path.startswith('checkpoints/')
    assert not cfg.model.vision_encoder.pretrained.startswith(('http:', 'https:'))


@pytest.mark.parametrize('num_tokens', TOKENS)
def test_config_builds_and_feeds_g_tokens(num_tokens, tiny_hf_dir):
    """The real config with tiny weights: 336 px / patch 14 -> 576 patches -> G LLM tokens."""
    cfg = load(num_tokens)
    cfg.model.vision_encoder.arch = dict(
        embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64)
    cfg.model.vision_encoder.pretrained = None
    cfg.model.mm_hidden_size = 32
    cfg.model.connector.num_heads = 4
    cfg.model.tokenizer.name_or_path = tiny_hf_dir
    cfg.model.lang_encoder.name_or_path = tiny_hf_dir
    model = MODELS.build(cfg.model).eval()
    assert model.connector.num_tokens == num_tokens

    seen = []
    model.model.lang_encoder.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs['inputs_embeds'].shape[1]), with_kwargs=True)
    sample = DataSample(question='what is in the image ?')
    with torch.no_grad():
        model.predict(torch.randn(1, 3, 336, 336), [sample], max_new_tokens=1)
    text = model.preprocess_text([sample], torch.device('cpu')).input_ids.shape[1]
    assert seen[0] == text - 1 + num_tokens


def test_config_with_a_llama_tokenizer_folder(tmp_path):
    """A Vicuna-style local folder (sentencepiece ``tokenizer.model`` + LLaMA config.json)."""
    import io

    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaTokenizer

    text = ['a chat between a curious human and an artificial intelligence assistant .',
            'what is in the image ? a red cat and a blue dog .'] * 20
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model_file, vocab_size=300,
        model_type='bpe', byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    (tmp_path / 'tokenizer.model').write_bytes(model_file.getvalue())
    LlamaTokenizer(vocab_file=str(tmp_path / 'tokenizer.model')).save_pretrained(tmp_path)
    (tmp_path / 'tokenizer.json').unlink(missing_ok=True)  # like the hub folder: slow files only
    LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(tmp_path)

    cfg = load(144)
    cfg.model.vision_encoder.arch = dict(
        embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64)
    cfg.model.vision_encoder.pretrained = None
    cfg.model.mm_hidden_size = 32
    cfg.model.connector.num_heads = 4
    cfg.model.tokenizer.name_or_path = str(tmp_path)
    cfg.model.lang_encoder.name_or_path = str(tmp_path)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        result = model.predict(torch.randn(1, 3, 336, 336),
                               [DataSample(question='what is in the image ?')],
                               max_new_tokens=2)
    assert isinstance(result[0].pred_answer, str)
    ids = model.preprocess_text([DataSample(question='what is in the image ?')],
                                torch.device('cpu')).input_ids[0]
    assert (ids == -200).sum() == 1 and (ids[ids != -200] < 300).all()
