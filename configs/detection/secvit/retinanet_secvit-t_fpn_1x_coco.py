# RetinaNet with a SECViT-T backbone, 1x schedule (12 epochs, 800x1333) on COCO.
# The base of the SECViT RetinaNet family: the -s/-b/-l configs change only the backbone.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/secvit_dense_backbone.py',
    '../../_base_/secvit_adamw.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _base_.secvit_backbone,
        _delete_=True,
        # Strides 8-32 only: RetinaNet's FPN starts at P3, and an unused stride-4 output
        # would leave parameters without gradients.
        out_indices=(1, 2, 3)),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5))

# AdamW, lr 1e-4 (the papers; the authors' RMT configs use 4e-4, 2e-4 for L: add
# `--cfg-options optim_wrapper.optimizer.lr=4e-4`), weight decay 1e-4 on every parameter (the
# authors' RetinaNet has no exempt groups), float16 mixed precision with a static loss scale
# of 512, as the authors' RetinaNet.
optim_wrapper = dict(
    _base_.secvit_optim_wrapper,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(_base_.secvit_optim_wrapper.optimizer, _delete_=True, weight_decay=0.0001),
    paramwise_cfg=None)

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
