# UperNet with an SEC-Swin-T backbone on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2
# images: mmseg's Swin-T UperNet config (AdamW lr 6e-5, weight decay 0.01, 1500-iteration
# warm-up) with only the backbone changed. Paper (strict comparison with Swin-T 44.5 mIoU):
# SEC-Swin-T 49.3. The -s config changes only the backbone.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='SECSwinTransformer',
        arch='t',
        # [32, 8, 2, global] clusters per stage at every input size, as in the papers.
        num_clusters=(32, 8, 2, -1),
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # ImageNet-1k weights of configs/classification/sec_swin/sec-swin-t_16xb64_in1k.py. A
        # stock Swin-T checkpoint loads too (its window-attention keys are skipped).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/sec-swin-t_in1k.pth',
            prefix='backbone.')))
