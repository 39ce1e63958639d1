# Semantic FPN with a SECViT-T backbone on ADE20K, 512x512 crops, 80k iterations, 8 GPUs x 2
# images, with PVT's recipe (AdamW lr 1e-4, weight decay 1e-4, poly decay with power 0.9).
# The base of the SECViT Semantic FPN family: the -s/-b/-l configs change only the backbone.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    '../../_base_/secvit_dense_backbone.py',
    '../../_base_/secvit_adamw.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # The backbone loads its own weights through init_cfg.
    pretrained=None,
    backbone=dict(_base_.secvit_backbone, _delete_=True),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

# PVT's Semantic FPN optimizer, AdamW lr 1e-4 and weight decay 1e-4, here on every parameter,
# in float32 and with poly decay down to 1e-6, as the authors' Semantic FPN (docs/recipes.md).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(_base_.secvit_optim_wrapper.optimizer, weight_decay=0.0001))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
