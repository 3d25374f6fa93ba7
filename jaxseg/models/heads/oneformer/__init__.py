"""OneFormer (Jain et al. 2023): its model pieces, one file each, all NHWC Flax Linen
modules: deformable_attention and pixel_decoder (the pixel decoder), clip_tokenizer and
task_encoder (the task token), attention, query_transformer and transformer_decoder (the
queries and their predictions), text_mapper (training only) and oneformer (the whole
forward pass)."""
