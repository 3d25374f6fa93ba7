"""TFDS builders. Importing these needs tensorflow_datasets; building them needs
TensorFlow (`pip install -e ".[prepare]"`). Training never imports this package."""
from jaxseg.data.builders.shapes import Shapes

BUILDERS = {"shapes": Shapes}
