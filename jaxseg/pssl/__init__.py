"""PSSL (Li et al. 2022): pseudo semantic segmentation labels for ImageNet from an
ensemble of classifier explanations (explain.py), generated resumably at scale
(generate.py, chunks.py), then a whole segmentation model pretrained on them
(configs/pssl_*_imagenet.py) and fine-tuned downstream with model.init_from.
benchmarks/pssl_demo.py runs the whole chain on `shapes` in minutes: classifiers of
the classification family on shapes_classification, their pseudo labels, a
pretraining, and fine-tuning with few labels against training from scratch."""
