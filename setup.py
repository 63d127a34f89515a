import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "tfhash", "_version.py"), encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)
with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="tfhash",
    version=VERSION,
    description="Adversarial learning to hash (HashGAN for images, SiGAH for feature vectors) in TensorFlow/Keras",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["tfhash", "tfhash.*", "trainers", "trainers.*", "export", "export.*"]),
    install_requires=[
        # CPU and GPU: on Linux with an NVIDIA GPU install "tensorflow[and-cuda]==2.21.*" (README).
        "tensorflow==2.21.*",
        "keras>=3.10,<4",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",  # needed by tensorflow-datasets 4.9.10, not declared by it
        "tensorboard==2.21.*",
        "numpy>=2,<3",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "absl-py>=2",
        "matplotlib>=3.7",  # TensorBoard PR-curve image, notebook figures
        "tqdm>=4.60",  # progress bars of index builds
        "numba>=0.61",  # the exact index's compiled search kernel (tfhash/_kernels.py)
        "xxhash>=3.4",  # XXH3-128 checksums of saved index files (tfhash/index/format.py)
    ],
    extras_require={
        "faiss": ["faiss-cpu>=1.8"],
        # Milvus Lite 3.x refuses binary vectors ("MilvusLite does not support"); 2.5.1 with pymilvus 2.6
        # stores and searches them with exact Hamming distances.
        "milvus": ["pymilvus>=2.6,<2.7", "milvus-lite==2.5.1"],
        # Beam 2.77 brings protobuf 6.33 (TensorFlow 2.21 accepts >=6.31.1,<8); the suite passes with it.
        # Beam's TFRecord sink refuses to write without a CRC32C implementation and installs none itself;
        # google-crc32c ships wheels (crcmod, Beam's own "tfrecord" extra, builds from source).
        "beam": ["apache-beam>=2.77,<3", "google-crc32c>=1.5"],
        "tflite": ["ai-edge-litert>=1.2"],
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "ruff>=0.6", "faiss-cpu>=1.8",
                "ai-edge-litert>=1.2", "nbclient>=0.10", "nbformat>=5.10",
                "ipykernel>=6.29", "pymilvus>=2.6,<2.7", "milvus-lite==2.5.1", "apache-beam>=2.77,<3",
                "google-crc32c>=1.5"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
