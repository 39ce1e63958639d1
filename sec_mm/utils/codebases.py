"""The OpenMMLab codebases sec_mm serves, and which of them a config belongs to."""
from mmengine.config import Config

__all__ = ['CODEBASES', 'codebase_of']

# The OpenMMLab codebases sec_mm registers into and reads configs of, in registration order:
# mmpretrain first, since SEC-Swin and SEC-DeiT subclass its backbones.
CODEBASES = ('mmpretrain', 'mmdet', 'mmseg')


def codebase_of(cfg: Config) -> str:
    """The codebase (``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``) of a config.

    Read from ``default_scope``, which every stock ``default_runtime`` sets.
    """
    scope = cfg.get('default_scope')
    if scope is None:
        raise ValueError(
            "The config sets no `default_scope`, so it is unclear whether it is an mmdet, "
            "mmseg or mmpretrain config; inherit the codebase's default_runtime (e.g. "
            "'mmdet::_base_/default_runtime.py') or add default_scope='mmdet' (or 'mmseg', "
            "'mmpretrain').")
    if scope not in CODEBASES:
        raise ValueError(f'default_scope={scope!r} is not one of the supported codebases '
                         f'{CODEBASES}.')
    return scope
