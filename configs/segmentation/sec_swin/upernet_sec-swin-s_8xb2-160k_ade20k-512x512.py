# UperNet with an SEC-Swin-S backbone on ADE20K, 512x512 crops, 160k iterations; as the
# SEC-Swin-T config with the deeper backbone. Paper: SEC-Swin-S 51.3 mIoU (Swin-S 47.6).
_base_ = './upernet_sec-swin-t_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='s',
        # ImageNet-1k weights of configs/classification/sec_swin/sec-swin-s_16xb64_in1k.py.
        init_cfg=dict(checkpoint='checkpoints/sec-swin-s_in1k.pth')))
