# SECViT-B: released top-1 85.0 (EMA weights).
_base_ = './secvit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4))
