# SEC-FasterViT-1 on ImageNet-1k: SEC-FasterViT-0's recipe (see sec-fastervit-0_8xb128_in1k.py)
# on FasterViT-1. Paper: 41M params, 5.6G FLOPs, 83.8 top-1 (FasterViT-1: 53M, 5.3G, 83.2).
_base_ = './sec-fastervit-0_8xb128_in1k.py'

model = dict(backbone=dict(arch='1'), head=dict(in_channels=640))
