# SEC-FasterViT-0 on ImageNet-1k: FasterViT-0 (NVIDIA's fastervit package; the `fastervit`
# extra) with SEC attention in stages 3-4 instead of its hierarchical attention (2 clusters in
# stage 3, global in stage 4). The papers' recipe for every classifier: DeiT training, 300
# epochs, AdamW, cosine, 5 warm-up epochs, batch 8 x 128 = 1024, lr 5e-4 x 1024 / 512, weight
# decay 0.05, RandAugment m9-mstd0.5, Mixup 0.8, CutMix 1.0, RandomErasing 0.25, label
# smoothing 0.1, EMA; stochastic depth 0.2 and the linear head as FasterViT-0.
# Paper: 25M params, 3.6G FLOPs, 82.6 top-1 (FasterViT-0: 31M, 3.3G, 82.1).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SECFasterViT', arch='0', drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

train_dataloader = dict(batch_size=128)

# 5 warm-up epochs (the stock Swin schedule warms up for 20).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

# Model EMA with DeiT's decay 0.99996.
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
