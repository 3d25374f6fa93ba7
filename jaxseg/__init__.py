"""jaxseg: landmark segmentation papers in JAX/Flax."""

__version__ = "0.1.0"
__all__ = ["Segmenter", "load"]


def __getattr__(name):
  # jaxseg.load / jaxseg.Segmenter import JAX on first use, not on `import jaxseg`: the
  # command line (jaxseg.main) decides about its process (jaxseg/huge_pages.py) first.
  if name in __all__:
    from jaxseg import api
    return getattr(api, name)
  raise AttributeError(f"module 'jaxseg' has no attribute '{name}'")
