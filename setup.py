"""speech2face: a TensorFlow/Keras reproduction of Speech2Face (Oh et al., CVPR 2019)."""

import setuptools

# TensorFlow 2.21 with its Keras 3, NumPy 2 and Apache Beam 2.77 resolve together for Python
# 3.11-3.13 (docs/install.md). TF 2.21 no longer pulls TensorBoard in, and the training loop writes
# image summaries, so it is a requirement of its own. tensorflow-io and keras-vggface are not used:
# both are dead (docs/install.md says what replaces each).
INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "tensorboard>=2.21,<2.22",
    "protobuf>=6.31.1,<7",  # TF 2.21 needs >= 6.31.1, Beam 2.77 < 7
    "numpy>=2,<3",
    "scipy>=1.13",
    "librosa>=0.11",
    "soundfile>=0.12",
    "soxr>=0.5",
    "numba>=0.61",
    "dlib-bin>=20",
    "face-recognition-models>=0.3.0",
    "imageio-ffmpeg>=0.5",
    "absl-py>=2.1",
    "Pillow>=11",
    "h5py>=3.11",
    "apache-beam>=2.77,<3",
]

# The optional AVSpeech segment downloader (python -m data_prep.download, docs/data.md): yt-dlp
# resolves the media URLs, imageio-ffmpeg's ffmpeg (already required) cuts the segments.
# YouTube changes often and only a recent yt-dlp keeps up, hence no upper bound.
DOWNLOAD_REQUIRES = ["yt-dlp>=2025.1.15"]

# The optional web app (speech2face.app): a small ASGI app, its server and its form parser.
APP_REQUIRES = ["starlette>=1.2,<2", "uvicorn>=0.30,<1", "python-multipart>=0.0.18,<1"]

setuptools.setup(
    name="speech2face",
    version="0.1.0",
    description="Speech2Face (CVPR 2019) reproduction in TensorFlow/Keras: voice encoder, face "
    "decoder, evaluation, dataset building and a built-in toy world.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["speech2face", "speech2face.*", "data_prep",
                                               "data_prep.*"]),
    python_requires=">=3.11,<3.14",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    install_requires=INSTALL_REQUIRES,
    entry_points={"console_scripts": [
        "speech2face-train = speech2face.cli.train:run",
        "speech2face-evaluate = speech2face.cli.evaluate:run",
        "speech2face-predict = speech2face.cli.predict:run",
        "speech2face-export-model = speech2face.cli.export_model:run",
        "speech2face-demo = speech2face.cli.demo:run",
        "speech2face-make-toy-world = speech2face.cli.make_toy_world:run",
        "speech2face-build-records = speech2face.cli.build_records:run",
        "speech2face-download = speech2face.cli.download:run",
        "speech2face-verify-records = speech2face.cli.verify_records:run",
        "speech2face-app = speech2face.app.__main__:run",
    ]},
    extras_require={
        # The app's packages are here too, so that CI (which installs .[test]) runs its tests;
        # httpx2 is what Starlette's TestClient uses (>= 1.2), selenium drives the browser test;
        # the downloader's tests run against a local server, with yt-dlp.
        "test": ["pytest>=7", "scikit-image>=0.21", *APP_REQUIRES, "httpx2>=2,<3",
                 "selenium>=4.25,<5", *DOWNLOAD_REQUIRES],
        # The web page to try a model on your own voice: python -m speech2face.app (docs/app.md).
        "app": APP_REQUIRES,
        # Fetch only the AVSpeech segments: python -m data_prep.download (docs/data.md).
        "download": DOWNLOAD_REQUIRES,
        # Google Cloud Dataflow and gs:// paths for the dataset builder (docs/data.md).
        "dataflow": ["apache-beam[gcp]>=2.77,<3"],
    },
    license="Apache-2.0",
)
