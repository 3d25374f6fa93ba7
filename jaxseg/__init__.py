"""jaxseg: landmark segmentation papers in JAX/Flax."""
from jaxseg.api import Segmenter, load

__version__ = "0.1.0"
__all__ = ["Segmenter", "load"]
