"""SECLlava end to end, tiny random parts: mmpretrain ViT, LLaMA from a config, local tokenizer."""
import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from sec_mm.models import SECConnector, SECLlava

NUM_PATCHES = 64  # 64x64 image, 8x8 patches
NUM_TOKENS = 10  # G, not a divisor of N


def samples():
    return [
        DataSample(question='what is in the image ?', gt_answer=['cat', 'red dog'],
                   gt_answer_weight=[0.3, 0.7]),
        DataSample(question='describe it', gt_answer='a blue cat . yes'),
    ]


@pytest.fixture(scope='module')
def sec_llava(tiny_llava_cfg):
    torch.manual_seed(0)
    return MODELS.build(tiny_llava_cfg(
        type='SECLlava', connector=dict(num_tokens=NUM_TOKENS, num_heads=4)))


@pytest.fixture(scope='module')
def stock_llava(tiny_llava_cfg):
    torch.manual_seed(0)
    return MODELS.build(tiny_llava_cfg())


def language_model_lengths(model, run):
    """Sequence lengths of every language-model call made by ``run()``."""
    lengths = []

    def record(module, args, kwargs):
        embeds = kwargs.get('inputs_embeds')
        ids = kwargs.get('input_ids')
        lengths.append((embeds if embeds is not None else ids).shape[1])

    handle = model.model.lang_encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return lengths


def test_connector_replaces_the_projector(sec_llava):
    assert isinstance(sec_llava, SECLlava)
    connector = sec_llava.connector
    assert isinstance(connector, SECConnector)
    assert connector is sec_llava.model.lang_encoder.model.mm_projector
    assert (connector.in_channels, connector.out_channels) == (32, 64)
    assert len(connector.projector) == 3  # mm_proj_depth=2: Linear, GELU, Linear


def test_language_model_input_is_shorter_by_n_minus_g(sec_llava, stock_llava):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stock = language_model_lengths(
            stock_llava, lambda: stock_llava.predict(images, samples(), max_new_tokens=1))
        sec = language_model_lengths(
            sec_llava, lambda: sec_llava.predict(images, samples(), max_new_tokens=1))
    assert stock[0] - sec[0] == NUM_PATCHES - NUM_TOKENS


def test_loss_supervises_only_the_answer(sec_llava):
    tokenizer = sec_llava.tokenizer
    sample = samples()[0]
    input_ids, mask, labels = sec_llava.preprocess_train_text([sample], torch.device('cpu'))
    prompt = sec_llava.prompt_tmpl.format(question=sample.question)
    before, after = prompt.split('<image>')
    prompt_ids = (tokenizer(before, add_special_tokens=False).input_ids + [-200] +
                  tokenizer(after, add_special_tokens=False).input_ids)
    # The answer with the largest weight, then EOS.
    answer_ids = tokenizer('red dog', add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    assert input_ids[0].tolist() == prompt_ids + answer_ids
    assert labels[0].tolist() == [-100] * len(prompt_ids) + answer_ids
    assert mask.all()


def test_loss_backward_and_padding(sec_llava):
    """Batch loss = token-weighted mean of the per-sample losses (right padding is masked)."""
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    batch = samples()
    sec_llava.train()
    sec_llava.zero_grad()
    loss = sec_llava(images, batch, mode='loss')['loss']
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert sec_llava.connector.q_proj.weight.grad.abs().sum() > 0
    assert sec_llava.model.lang_encoder.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    # mmpretrain's LLaVA runs the vision encoder without gradients.
    assert all(p.grad is None for p in sec_llava.model.vision_tower.parameters())

    sec_llava.eval()
    with torch.no_grad():
        together = sec_llava(images, batch, mode='loss')['loss']
        single = [sec_llava(images[i:i + 1], batch[i:i + 1], mode='loss')['loss'] for i in (0, 1)]
    counts = [(sec_llava.preprocess_train_text([s], images.device)[2] != -100).sum() for s in batch]
    expected = (single[0] * counts[0] + single[1] * counts[1]) / (counts[0] + counts[1])
    torch.testing.assert_close(together, expected, atol=1e-5, rtol=1e-5)


def test_generate_predicts_text(sec_llava):
    sec_llava.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        results = sec_llava(images, samples(), mode='predict')
        outputs = sec_llava.model.generate(
            sec_llava.preprocess_text(samples(), images.device).input_ids, images=images,
            max_new_tokens=3, eos_token_id=-1, pad_token_id=0)
    assert [type(r.pred_answer) for r in results] == [str, str]
    prompt_length = sec_llava.preprocess_text(samples(), images.device).input_ids.shape[1]
    assert outputs.shape == (2, prompt_length + 3)  # greedy, 3 new tokens each
    vocab = set(sec_llava.tokenizer.get_vocab())
    for result in results:
        assert set(result.pred_answer.split()) <= vocab


def test_class_token_reaches_the_connector(tiny_llava_cfg):
    model = MODELS.build(tiny_llava_cfg(
        type='SECLlava', connector=dict(num_tokens=NUM_TOKENS, num_heads=4,
                                        with_cls_token=True)))
    seen = {}
    model.connector.register_forward_pre_hook(lambda m, args: seen.setdefault('x', args[0]))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        lengths = language_model_lengths(
            model, lambda: model.predict(images, samples()[:1], max_new_tokens=1))
        tokens = model.model.vision_tower(images)[-1]
    assert seen['x'].shape == (1, 1 + NUM_PATCHES, 32)
    torch.testing.assert_close(seen['x'], tokens[:, 1:])  # hook output: [cls, cls, patches]
    text = model.preprocess_text(samples()[:1], images.device).input_ids.shape[1]
    assert lengths[0] == text - 1 + 1 + NUM_TOKENS


def test_loads_a_stock_llava_checkpoint(sec_llava, stock_llava):
    """A stock LLaVA state dict initialises everything but the SEC merge layers."""
    result = sec_llava.load_state_dict(stock_llava.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all('.mm_projector.' in key and '_proj.' in key for key in result.missing_keys)
    stock_mlp = stock_llava.model.lang_encoder.model.mm_projector
    torch.testing.assert_close(sec_llava.connector.projector[2].weight, stock_mlp[2].weight)


def test_bad_settings_raise(tiny_llava_cfg, sec_llava):
    vision = tiny_llava_cfg()['vision_encoder']
    with pytest.raises(ValueError, match='outputs no class token'):
        MODELS.build(tiny_llava_cfg(
            type='SECLlava', vision_encoder=dict(vision, with_cls_token=False, out_type='raw'),
            connector=dict(num_tokens=4, num_heads=4, with_cls_token=True)))
    with pytest.raises(TypeError, match='connector'):
        MODELS.build(tiny_llava_cfg(type='SECLlava', connector=144))
    with pytest.raises(KeyError, match='gt_answer'):
        sec_llava(torch.randn(1, 3, 64, 64), [DataSample(question='what ?')], mode='loss')
    with pytest.raises(ValueError, match='num_tokens <= 64'):
        big = MODELS.build(tiny_llava_cfg(
            type='SECLlava', connector=dict(num_tokens=100, num_heads=4)))
        big.predict(torch.randn(1, 3, 64, 64), samples()[:1])
