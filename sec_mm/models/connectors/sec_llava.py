"""mmpretrain's LLaVA with a token-reducing connector (SEC) in place of its MLP projector."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.multimodal.llava import Llava
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

# mmpretrain's LLaVA marks the image position in input_ids with this id.
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


def _repeat_class_token(module: nn.Module, inputs: Any, outputs: Tuple[Tensor, ...]):
    """Forward hook on the vision encoder: put a copy of the class token in front.

    mmpretrain's LLaVA drops token 0 of the encoder's last output (``feats[-1][:, 1:]``)
    before the projector; with the copy, the connector still receives ``[cls, patches]``.
    """
    last = outputs[-1]
    return (*outputs[:-1], torch.cat([last[:, :1], last], dim=1))


class SECLlava(Llava):
    """LLaVA whose language model receives ``G`` merged image tokens instead of ``N``.

    A drop-in for mmpretrain's ``Llava``: every argument is the same, plus ``connector``, which
    replaces LLaVA's MLP projector (``model.lang_encoder.model.mm_projector``, where
    mmpretrain's LLaVA calls it) by a module mapping ``(B, N, mm_hidden_size)`` patch tokens to
    ``(B, G, lang_hidden_size)``. The image placeholder of the prompt is then expanded to ``G``
    embeddings, so the language model's sequence is ``N - G`` tokens shorter. Switching a
    stock LLaVA config is one change::

        model = dict(type='SECLlava', connector=dict(num_tokens=144))

    Unlike mmpretrain's ``Llava`` (inference only), ``mode='loss'`` is supported: the prompt
    (``prompt_tmpl`` formatted with the data sample) is followed by the target text
    (``gt_caption`` for ``task='caption'``, ``gt_answer`` for ``task='vqa'``) and EOS; only
    the target and EOS are supervised. The vision encoder runs without gradients, as in
    mmpretrain's LLaVA; the connector and the language model get gradients. A tokenizer
    without a padding token (LLaMA's) pads with its ``<unk>`` token, as LLaVA does.

    Args:
        connector (dict): Config of the connector, built from mmpretrain's ``MODELS``; ``type``
            defaults to ``'SECConnector'``, ``in_channels`` to ``mm_hidden_size``,
            ``out_channels`` to the language model's hidden size and ``proj_depth`` to
            ``mm_proj_depth``. With ``with_cls_token=True`` the vision encoder's class token
            is passed to the connector too (the paper's ``G + 1`` tokens); the encoder must
            then output one (mmpretrain ``VisionTransformer`` with ``with_cls_token=True``).
        mm_hidden_size (int): Channels of the vision tokens.
        mm_proj_depth (int): Depth of LLaVA's MLP projector, inside the connector.
            Defaults to 1 like ``Llava``.
        **kwargs: The other arguments of :class:`mmpretrain.models.Llava` (vision_encoder,
            lang_encoder, tokenizer, prompt_tmpl, task, ...).
    """

    def __init__(self,
                 connector: dict,
                 mm_hidden_size: int,
                 mm_proj_depth: int = 1,
                 **kwargs) -> None:
        if not isinstance(connector, dict):
            raise TypeError(f'`connector` must be a config dict such as '
                            f"dict(type='SECConnector', num_tokens=144), got {connector!r}.")
        super().__init__(mm_hidden_size=mm_hidden_size, mm_proj_depth=mm_proj_depth, **kwargs)
        if self.tokenizer.pad_token is None:
            # LLaMA tokenizers have none and batched prompts are padded; LLaVA pads with
            # <unk> too. Padding is masked, so the choice does not change results.
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        connector = dict(connector)
        connector.setdefault('type', 'SECConnector')
        connector.setdefault('in_channels', mm_hidden_size)
        connector.setdefault('out_channels', self.model.lang_hidden_size)
        connector.setdefault('proj_depth', mm_proj_depth)
        connector = MODELS.build(connector)
        # Replace the MLP projector where mmpretrain's LLaVA calls it.
        self.model.lang_encoder.model.mm_projector = connector

        if getattr(connector, 'with_cls_token', False):
            if not getattr(self.model.vision_tower, 'with_cls_token', False):
                raise ValueError(
                    'The connector has with_cls_token=True but the vision encoder outputs no '
                    'class token; set with_cls_token=True in vision_encoder or False in '
                    'connector.')
            self.model.vision_tower.register_forward_hook(_repeat_class_token)

    @property
    def connector(self) -> nn.Module:
        """The module that turns vision tokens into the language model's image tokens."""
        return self.model.lang_encoder.model.mm_projector

    def forward(self,
                images: Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'loss'):
        """``mode='loss'``: a dict with the language-model loss; ``'predict'``: as ``Llava``."""
        if mode == 'loss':
            return self.loss(images, data_samples)
        return super().forward(images, data_samples, mode=mode)

    def loss(self, images: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Next-token loss on the target text of every sample.

        Args:
            images (Tensor): ``(B, 3, H, W)``.
            data_samples (list[DataSample]): With the fields ``prompt_tmpl`` needs and the
                target (``gt_caption`` or ``gt_answer``).

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``.
        """
        if not data_samples:
            raise ValueError('SECLlava needs data_samples with the target text for mode="loss".')
        input_ids, attention_mask, labels = self.preprocess_train_text(
            data_samples, device=images.device)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            images=images,
            return_dict=True)
        return dict(loss=outputs.loss)

    def _target_text(self, sample: DataSample) -> str:
        key = 'gt_caption' if self.task == 'caption' else 'gt_answer'
        if key not in sample:
            raise KeyError(
                f'SECLlava with task={self.task!r} trains on `{key}`, which a data sample lacks; '
                f"pack it with PackInputs(algorithm_keys=['{key}', ...]).")
        target = sample.get(key)
        if isinstance(target, (list, tuple)):
            if not target:
                raise ValueError(f'`{key}` of a data sample is empty.')
            weights = sample.get('gt_answer_weight')
            if weights is not None and len(weights) == len(target):
                # VQA datasets list several answers with their agreement weights.
                target = target[max(range(len(target)), key=lambda i: float(weights[i]))]
            else:
                target = target[0]
        return str(target)

    def _prompt_ids(self, prompt: str) -> List[int]:
        if prompt.count('<image>') != 1:
            raise ValueError(
                'mmpretrain\'s LLaVA supports exactly one <image> per prompt; the prompt has '
                f'{prompt.count("<image>")}: {prompt!r}. Fix prompt_tmpl.')
        prefix, _, suffix = prompt.partition('<image>')
        encode = self.tokenizer
        return (encode(prefix, add_special_tokens=False).input_ids + [IMAGE_TOKEN_INDEX] +
                encode(suffix, add_special_tokens=False).input_ids)

    def preprocess_train_text(self, data_samples: Sequence[DataSample],
                              device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """Prompt + target + EOS per sample, right-padded.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``input_ids``, ``attention_mask`` and ``labels``, each
            ``(B, T)``; ``input_ids`` hold ``-200`` at the image position, ``labels`` are
            ``-100`` except on the target and EOS.
        """
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError('The tokenizer has no EOS token; SECLlava needs one to train.')
        pad = self.tokenizer.pad_token_id  # masked out: any real id works

        sequences = []
        for sample in data_samples:
            prompt = self._prompt_ids(self.prompt_tmpl.format(**sample.to_dict()))
            target = self.tokenizer(
                self._target_text(sample), add_special_tokens=False).input_ids + [eos]
            sequences.append((prompt + target, [IGNORE_INDEX] * len(prompt) + target))

        length = max(len(ids) for ids, _ in sequences)
        input_ids = torch.full((len(sequences), length), pad, dtype=torch.long)
        labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, (ids, target) in enumerate(sequences):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(ids)] = torch.tensor(target)
            attention_mask[row, :len(ids)] = 1
        return input_ids.to(device), attention_mask.to(device), labels.to(device)
