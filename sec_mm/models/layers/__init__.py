from .conv_ffn import ConvFFN
from .norm import LayerNorm2d
from .rope import RotaryEmbedding2d, apply_rope, rotate_pairs
from .sec_attention import SECAttention
from .secvit_block import SECViTBlock

__all__ = [
    'ConvFFN', 'LayerNorm2d', 'RotaryEmbedding2d', 'apply_rope', 'rotate_pairs',
    'SECAttention', 'SECViTBlock'
]
