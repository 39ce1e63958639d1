from .secvit import SECViT

__all__ = ['SECViT']
