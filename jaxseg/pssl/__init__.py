"""PSSL (Li et al. 2022): pseudo semantic segmentation labels for ImageNet from an
ensemble of classifier explanations (explain.py), generated resumably at scale
(generate.py, chunks.py), then a whole segmentation model pretrained on them
(configs/pssl_*_imagenet.py) and fine-tuned downstream with model.init_from."""
