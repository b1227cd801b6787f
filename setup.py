"""speech2face: a TensorFlow/Keras reproduction of Speech2Face (Oh et al., CVPR 2019)."""

import setuptools

# The stack is pinned on purpose (see README, "Why these versions"): tensorflow-io 0.37.1, the last
# release, loads its ops only against TF 2.17; Apache Beam (dataset building) needs protobuf < 5.
INSTALL_REQUIRES = [
    "tensorflow>=2.17,<2.18",
    "tensorflow-io==0.37.1",
    "protobuf>=4.21,<5",
    "numpy>=1.23,<2",
    "scipy>=1.10",
    "librosa>=0.10",
    "soundfile>=0.12",
    "soxr>=0.3",
    "numba>=0.57",
    "dlib-bin>=19.24",
    "face-recognition-models>=0.3.0",
    "imageio-ffmpeg>=0.4.9",
    "absl-py>=1.4",
    "Pillow>=10",
    "h5py>=3.8",
    "apache-beam>=2.77,<2.78",
]

setuptools.setup(
    name="speech2face",
    version="0.1.0",
    description="Speech2Face (CVPR 2019) reproduction in TensorFlow/Keras: voice encoder, face "
    "decoder, evaluation, dataset building and a built-in toy world.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["speech2face", "speech2face.*", "data_prep",
                                               "data_prep.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=7", "scikit-image>=0.21"],
        # Google Cloud Dataflow and gs:// paths for the dataset builder (docs/data.md).
        "dataflow": ["apache-beam[gcp]>=2.77,<2.78"],
    },
    license="Apache-2.0",
)
