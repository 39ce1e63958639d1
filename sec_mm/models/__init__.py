"""SEC models. Backbones and layers need mmengine and mmcv only; heads need mmpretrain."""
import importlib.util

from .backbones import SECViT
from .connectors import SECConnector
from .layers import LayerNorm2d, SECAttention, SECViTBlock

__all__ = ['SECViT', 'SECAttention', 'SECViTBlock', 'LayerNorm2d', 'SECConnector']

try:
    from .heads import SECViTClsHead  # noqa: F401
    __all__.append('SECViTClsHead')
except ImportError:  # mmpretrain is not installed
    pass

try:
    from .connectors import SECLlava  # noqa: F401
    __all__.append('SECLlava')
except ImportError:  # mmpretrain or transformers (mmpretrain's LLaVA) is not installed
    pass

if importlib.util.find_spec('mmpretrain') is not None:
    # SEC-Swin and SEC-DeiT subclass mmpretrain's Swin and ViT; SEC-FasterViT uses
    # SECMultiheadAttention (and the fastervit extra once built).
    from .backbones import SECFasterViT, SECSwinTransformer, SECVisionTransformer  # noqa: F401
    from .layers import SECMultiheadAttention  # noqa: F401
    __all__ += ['SECSwinTransformer', 'SECVisionTransformer', 'SECFasterViT',
                'SECMultiheadAttention']
