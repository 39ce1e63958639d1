# Mask R-CNN with a SECViT-T backbone, 1x schedule (12 epochs, 800x1333) on COCO.
# The base of the SECViT Mask R-CNN 1x family: the -s/-b/-l configs change only the backbone.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/secvit_dense_backbone.py',
    '../../_base_/secvit_adamw.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.secvit_backbone, _delete_=True),
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW, lr 1e-4 (the papers; the authors' RMT configs use 4e-4, 2e-4 for B 3x and L: add
# `--cfg-options optim_wrapper.optimizer.lr=4e-4`), weight decay 0.05, no weight decay on
# norms, float16 mixed precision with dynamic loss scaling, as the authors' detectors
# (docs/recipes.md).
optim_wrapper = dict(
    _base_.secvit_optim_wrapper,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(_base_.secvit_optim_wrapper.optimizer, _delete_=True))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
# 500 warm-up iterations, as the authors' detection configs.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
