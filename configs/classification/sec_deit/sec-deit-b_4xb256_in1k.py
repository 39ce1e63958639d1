# SEC-DeiT-B on ImageNet-1k: SEC-DeiT-S's recipe (DeiT's, see sec-deit-s_4xb256_in1k.py; the
# same as mmpretrain's DeiT-B config but for 5 warm-up epochs, no gradient clipping, repeated
# augmentation and the EMA decay) on the DeiT-B backbone, 4 GPUs x 256 images. The papers do not
# give SEC-DeiT-B's cluster count; 4, SEC-DeiT-S's middle setting (docs/recipes.md).
# The papers: 86M params, 14.8G FLOPs, 82.4 top-1 (DeiT-B 81.8, 17.6G).
_base_ = './sec-deit-s_4xb256_in1k.py'

model = dict(backbone=dict(arch='deit-base'), head=dict(in_channels=768))
