# SECViT-T classifier on the toy ImageNet shapes set (tools/misc/make_toy_datasets.py imagenet):
# one shape per image, 3 classes read from the class folders. Small enough for a CPU: 128 px
# images, an iteration-based schedule, no RandAugment/RandomErasing/EMA. The model and its
# Mixup/CutMix are the real SECViT-T recipe's. For trying the tools end to end; no accuracy is
# claimed for it.
_base_ = ['../secvit-t_8xb128_in1k.py']

classes = ('circle', 'square', 'triangle')
image_size = 128
data_root = 'data/toy_imagenet/'
max_iters = 300
val_interval = 100

data_preprocessor = dict(num_classes=len(classes))
model = dict(
    # From scratch, so that the toy runs need no downloaded weights.
    backbone=dict(init_cfg=None),
    head=dict(num_classes=len(classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
# CustomDataset: the toy set has 3 class folders, ImageNet's class insists on its 1000.
_toy_dataset = dict(_delete_=True, type='CustomDataset', data_root=data_root, with_label=True)
# Plain shuffling: with the recipe's repeated augmentation, one process would see every image
# three times in a row, in the same batch.
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**_toy_dataset, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**_toy_dataset, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))  # top-5 of 3 classes is always 100
test_evaluator = val_evaluator

train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         T_max=max_iters - 30, eta_min_ratio=0.01)
]
# The recipe's EMA decay is set for 300 ImageNet epochs; a short run evaluates the plain model.
custom_hooks = []
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=2))
log_processor = dict(by_epoch=False, window_size=10)
auto_scale_lr = dict(enable=False, base_batch_size=8)
