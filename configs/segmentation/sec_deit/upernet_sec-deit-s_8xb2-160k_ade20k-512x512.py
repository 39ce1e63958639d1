# UperNet with an SEC-DeiT-S backbone (4 clusters) on ADE20K, 512x512 crops, 160k iterations,
# 8 GPUs x 2 images: mmseg's DeiT-S MultiLevelNeck UperNet config (AdamW lr 6e-5, weight decay
# 0.01, 1500-iteration warm-up) with the SEC backbone. The backbone gives the stride-16 maps of
# blocks 3, 6, 9 and 12 and the MultiLevelNeck resamples them into 4 scales (strides 4, 8, 16,
# 32), as in mmseg's config.
# Paper: SEC-DeiT-S 47.5 mIoU (DeiT-S 43.0).
_base_ = [
    'mmseg::vit/vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    # Weights come through the backbone's init_cfg.
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SECVisionTransformer',
        arch='deit-small',
        num_clusters=4,
        img_size=(512, 512),
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=(2, 5, 8, 11),
        # ImageNet-1k weights of configs/classification/sec_deit/sec-deit-s_4xb256_in1k.py;
        # the position embedding is resized to 32x32 when they load.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/sec-deit-s_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[384] * 4))
