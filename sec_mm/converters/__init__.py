"""Converters of other projects' checkpoints to sec_mm's keys, used by
``tools/model_converters``. No model imports this package: models load converted files."""
from .secvit_release import (convert_secvit_state_dict, expected_secvit_classifier_keys,
                             infer_secvit_arch)

__all__ = ['convert_secvit_state_dict', 'infer_secvit_arch', 'expected_secvit_classifier_keys']
