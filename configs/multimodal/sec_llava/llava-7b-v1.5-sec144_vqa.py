# LLaVA-1.5 7B with the SEC connector: 576 CLIP patch tokens -> 144 image tokens for the LLM.
# Everything else is mmpretrain's stock LLaVA-1.5 VQA config; weights come from local paths
# only (see README.md beside this file for how to prepare them).
_base_ = 'mmpretrain::llava/llava-7b-v1.5_vqa.py'

custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

# Local copies, prepared once on a machine with internet access (README.md).
llm_dir = 'checkpoints/vicuna-7b-v1.5'  # HF folder: config.json + tokenizer (+ weights)
clip_checkpoint = 'checkpoints/vit-large-p14_clip-openai-pre_336px_20231025-fb1315ed.pth'

model = dict(
    # The one change that swaps LLaVA's MLP projector for the SEC connector.
    type='SECLlava',
    connector=dict(type='SECConnector', num_tokens=144, num_heads=16, merge='interleaved'),
    # Local weights; never a hub download at run time.
    tokenizer=dict(name_or_path=llm_dir, local_files_only=True),
    vision_encoder=dict(pretrained=clip_checkpoint),
    lang_encoder=dict(name_or_path=llm_dir, local_files_only=True),
)
