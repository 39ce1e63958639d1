from .checkpoint import (CheckpointMismatchError, check_state_dict_fits, extract_state_dict,
                         load_pretrained_into, pop_pretrained_cfg, require_fitting_checkpoints,
                         require_fitting_state_dict)

# The release converter (convert_secvit_state_dict, infer_secvit_arch) is in sec_mm.converters:
# it builds SECViT, and the models import this package.
__all__ = [
    'CheckpointMismatchError', 'check_state_dict_fits', 'extract_state_dict',
    'load_pretrained_into', 'pop_pretrained_cfg', 'require_fitting_checkpoints',
    'require_fitting_state_dict'
]
