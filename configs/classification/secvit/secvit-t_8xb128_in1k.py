# SECViT-T on ImageNet-1k: the released recipe (DeiT training, 300 epochs, AdamW, cosine,
# 5 warm-up epochs, batch 8 x 128 = 1024, lr 5e-4 x 1024 / 512, weight decay 0.05, RandAugment
# m9-mstd0.5, Mixup 0.8, CutMix 1.0, RandomErasing 0.25, label smoothing 0.1, repeated
# augmentation x3, EMA, SyncBN). docs/recipes.md lists the sources.
# Released top-1: 82.6 (plain weights).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SECViT', arch='t', drop_path_rate=0.1),
    head=dict(
        type='SECViTClsHead',
        num_classes=1000,
        in_channels=512,
        hidden_channels=1024,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# Repeated augmentation (DeiT's): each drawn image is used three times, the copies on
# different GPUs with their own augmentation; an epoch keeps the dataset's length.
train_dataloader = dict(batch_size=128, sampler=dict(type='RepeatAugSampler', shuffle=True))
# The released training converts every BatchNorm (stem, downsamples, head) to SyncBN; the
# tools run them as BN on CPU.
sync_bn = 'torch'

# 5 warm-up epochs (the stock Swin schedule warms up for 20).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

# Model EMA; the released S/B/L accuracies are the EMA weights'. DeiT's decay 0.99996 per 512
# images, raised to the power batch / 512 as the release does: 1 - 0.99996 ** 2 = 8e-5 per
# iteration. The BatchNorm statistics are averaged too, as in the release (timm's ModelEma).
# After it, sec_mm's run hooks (configs/_base_/sec_run_hooks.py: a list replaces a base's).
custom_hooks = [
    dict(type='EMAHook', momentum=8e-5, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='NonFiniteGuardHook'),
    dict(type='ExactResumeHook'),
    dict(type='PreemptionHook'),
]
