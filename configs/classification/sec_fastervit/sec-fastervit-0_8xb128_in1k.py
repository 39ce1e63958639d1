# SEC-FasterViT-0 on ImageNet-1k: FasterViT-0 (NVIDIA's fastervit package; the `fastervit`
# extra) with SEC attention in stages 3-4 instead of its hierarchical attention (2 clusters in
# stage 3, global in stage 4). The papers state one recipe for every classifier and nothing
# specific to SEC-FasterViT, so this inherits SECViT-T's (DeiT training, 300 epochs, AdamW,
# cosine, 5 warm-up epochs, batch 8 x 128 = 1024, RandAugment, Mixup, CutMix, RandomErasing,
# label smoothing, repeated augmentation, EMA, SyncBN) and changes the model: stochastic depth
# 0.2 and the linear head, as FasterViT-0.
# Paper: 25M params, 3.6G FLOPs, 82.6 top-1 (FasterViT-0: 31M, 3.3G, 82.1).
_base_ = '../secvit/secvit-t_8xb128_in1k.py'

model = dict(
    backbone=dict(type='SECFasterViT', arch='0', drop_path_rate=0.2, _delete_=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        cal_acc=False,
        _delete_=True),
)
