"""SEC models. Backbones and layers need mmengine and mmcv only; heads need mmpretrain."""
from .backbones import SECViT
from .layers import LayerNorm2d, SECAttention, SECViTBlock

__all__ = ['SECViT', 'SECAttention', 'SECViTBlock', 'LayerNorm2d']

try:
    from .heads import SECViTClsHead  # noqa: F401
    __all__.append('SECViTClsHead')
except ImportError:  # mmpretrain is not installed
    pass
