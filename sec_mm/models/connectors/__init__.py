"""Vision-language connectors; the LLaVA wiring needs mmpretrain with transformers."""
from .sec_connector import SECConnector, build_llava_projector

__all__ = ['SECConnector', 'build_llava_projector']

try:
    from .sec_llava import SECLlava  # noqa: F401
    __all__.append('SECLlava')
except ImportError:  # mmpretrain or transformers (mmpretrain's LLaVA) is not installed
    pass
