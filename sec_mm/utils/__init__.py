from .checkpoint import (CheckpointMismatchError, convert_secvit_state_dict,
                         extract_state_dict, infer_secvit_arch, load_pretrained_into)

__all__ = [
    'CheckpointMismatchError', 'convert_secvit_state_dict', 'extract_state_dict',
    'infer_secvit_arch', 'load_pretrained_into'
]
