import importlib.util

from .conv_ffn import ConvFFN
from .depthwise_conv import DepthwiseConv2d
from .norm import LayerNorm2d
from .rope import RotaryEmbedding2d, apply_rope, rotate_pairs
from .sec_attention_2d import SECAttention
from .secvit_block import SECViTBlock

__all__ = [
    'ConvFFN', 'DepthwiseConv2d', 'LayerNorm2d', 'RotaryEmbedding2d', 'apply_rope',
    'split_qkv_with_rope', 'rotate_pairs', 'SECAttention', 'SECViTBlock'
]

if importlib.util.find_spec('mmpretrain') is not None:
    # Subclasses mmpretrain's MultiheadAttention.
    from .sec_multihead_attention import SECMultiheadAttention  # noqa: F401
    __all__.append('SECMultiheadAttention')
