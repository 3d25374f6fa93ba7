"""TFDS builders. Importing these needs tensorflow_datasets; building them needs
TensorFlow (`pip install -e ".[prepare]"`; the .mat files of SBD, PASCAL Context
and the ImageNet devkit need scipy). Training never imports this package."""
from jaxseg.data.builders.ade20k import Ade20k
from jaxseg.data.builders.ade20k_panoptic import Ade20kPanoptic
from jaxseg.data.builders.cityscapes import Cityscapes
from jaxseg.data.builders.coco_panoptic import CocoPanoptic
from jaxseg.data.builders.imagenet_pssl import ImagenetPssl
from jaxseg.data.builders.pascal_context import PascalContext
from jaxseg.data.builders.pssl_generated import PsslGenerated
from jaxseg.data.builders.shapes import Shapes
from jaxseg.data.builders.shapes_classification import ShapesClassification
from jaxseg.data.builders.shapes_panoptic import ShapesPanoptic
from jaxseg.data.builders.voc_aug import VocAug

BUILDERS = {
    "shapes": Shapes,
    "shapes_classification": ShapesClassification,
    "shapes_panoptic": ShapesPanoptic,
    "voc_aug": VocAug,
    "cityscapes": Cityscapes,
    "ade20k": Ade20k,
    "ade20k_panoptic": Ade20kPanoptic,
    "pascal_context": PascalContext,
    "coco_panoptic": CocoPanoptic,
    "imagenet_pssl": ImagenetPssl,
    "pssl_generated": PsslGenerated,
}
