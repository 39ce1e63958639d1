import logging
from typing import List

import pytest
import torch
from mmengine.logging import MMLogger


class _Collector(logging.Handler):

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def mm_log_messages():
    """Messages that sec_mm writes with ``print_log(..., logger='current')`` during a test."""
    logger = MMLogger.get_current_instance()
    collector = _Collector()
    logger.addHandler(collector)
    yield collector.messages
    logger.removeHandler(collector)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every floating parameter and buffer a distinct random value, so a test can tell
    loaded tensors from freshly initialised ones (LayerNorms start at exactly 1 and 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.fixture
def randomize():
    """``randomize(model, seed=0)``: see :func:`_randomize`."""
    return _randomize
