"""Static-shape building blocks of two-stage detectors (RPN + RoI heads): boxes, anchors,
padded NMS, RoIAlign as gathers, training targets and sampling, FPN with PANet's bottom-up
path. They live together here, not under one head, because the RPN, the box head and the
mask head all use them, and the detection family composes them.

Every function keeps its shapes fixed whatever the data (padded inputs carry a validity
mask; every output has a fixed size and its own mask), so one compiled step serves every
batch, as in the TPU Mask R-CNN reference design.
"""
