# SECViT-L: released top-1 85.6 (EMA weights).
_base_ = './secvit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='l', drop_path_rate=0.5), head=dict(in_channels=640))
