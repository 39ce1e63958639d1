"""Tiny, local LLaVA parts: a word-level tokenizer and a random LLaMA config, no downloads."""
import pytest

# Prompt and answer words of the tests; anything else maps to <unk>.
WORDS = ('a chat between user and assistant : what is in the image ? describe it '
         'cat dog red blue green yes no one two three . ,').split()
SPECIAL = ['<unk>', '<s>', '</s>', '<pad>']
PROMPT = 'a chat between user and assistant . user : <image> {question} assistant :'


@pytest.fixture(scope='session')
def tiny_hf_dir(tmp_path_factory):
    """A folder that ``AutoTokenizer`` / ``AutoConfig.from_pretrained`` read locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp('tiny_llama')
    vocab = {word: i for i, word in enumerate(dict.fromkeys(SPECIAL + WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token='<s>', eos_token='</s>', unk_token='<unk>',
        pad_token='<pad>').save_pretrained(folder)
    LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, bos_token_id=1,
        eos_token_id=2, pad_token_id=3).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope='session')
def tiny_llava_cfg(tiny_hf_dir):
    """``make(**overrides)``: an mmpretrain LLaVA config dict with tiny random parts.

    The vision encoder is an mmpretrain ``VisionTransformer`` (32 channels, 64x64 images,
    8x8 patches: N = 64 patch tokens plus a class token).
    """

    def make(**overrides):
        cfg = dict(
            type='Llava',
            tokenizer=dict(type='AutoTokenizer', name_or_path=tiny_hf_dir),
            vision_encoder=dict(
                type='VisionTransformer',
                arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                img_size=64, patch_size=8, pre_norm=True, final_norm=False, out_type='raw'),
            mm_hidden_size=32,
            use_im_patch=False,
            use_im_start_end=False,
            mm_proj_depth=2,
            lang_encoder=dict(type='AutoModelForCausalLM', name_or_path=tiny_hf_dir),
            task='vqa',
            prompt_tmpl=PROMPT,
            generation_cfg=dict(max_new_tokens=4))
        cfg.update(overrides)
        return cfg

    return make
