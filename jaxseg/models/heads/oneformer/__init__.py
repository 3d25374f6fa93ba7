"""OneFormer (Jain et al. 2023): its model pieces, one file each (deformable attention,
pixel decoder, ...), all NHWC Flax Linen modules."""
