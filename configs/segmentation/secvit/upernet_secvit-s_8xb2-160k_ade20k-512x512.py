# UperNet with a SECViT-S backbone on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2 images,
# with Swin's ADE20K recipe (AdamW, weight decay 0.01, 1500-iteration warm-up, linear decay).
# The base of the SECViT UperNet family: the -b/-l configs change only the backbone.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../../_base_/secvit_dense_backbone.py',
    '../../_base_/secvit_adamw.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _base_.secvit_backbone,
        _delete_=True,
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(
            _base_.secvit_backbone.init_cfg, checkpoint='checkpoints/secvit-s_in1k_mm.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

# Swin's ADE20K optimizer: AdamW lr 6e-5, weight decay 0.01, none on norms; float16 mixed
# precision with a static loss scale of 512, as the authors' UperNet.
optim_wrapper = dict(
    _base_.secvit_optim_wrapper,
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(_base_.secvit_optim_wrapper.optimizer, lr=0.00006, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
