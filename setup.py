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
    # 2.77 by default; 2.72 is the newest whose [gcp] extra resolves beside protobuf<5 (TF 2.17).
    "apache-beam>=2.72,<2.78",
]

# Beam's [gcp] extra needs protobuf>=5 from 2.73 on (google-cloud-bigtable, grpcio-tools), which
# TF 2.17 rules out, so Dataflow users get Beam 2.72.0, with its Google Cloud dependencies at the
# newest releases that still accept protobuf<5: what a resolver finds anyway (uv does in
# seconds), spelled out because pip's backtracking through every newer release had not finished
# after 15 minutes.
DATAFLOW_REQUIRES = [
    "apache-beam[gcp]==2.72.0",
    "cloud-sql-python-connector<=1.22.0",
    "google-api-core<=2.30.3",
    "google-cloud-bigquery-storage<=2.39.0",
    "google-cloud-bigtable<=2.39.0",
    "google-cloud-build<=3.37.0",
    "google-cloud-datastore<=2.25.0",
    "google-cloud-dlp<=3.38.0",
    "google-cloud-kms<=3.14.0",
    "google-cloud-language<=2.21.0",
    "google-cloud-monitoring<=2.31.0",
    "google-cloud-pubsub<=2.39.0",
    "google-cloud-resource-manager<=1.18.0",
    "google-cloud-secret-manager<=2.29.0",
    "google-cloud-spanner<=3.68.0",
    "google-cloud-videointelligence<=2.20.0",
    "google-cloud-vision<=3.15.0",
    "googleapis-common-protos<=1.75.0",
    "grpc-google-iam-v1<=0.14.4",
    "grpcio-status<=1.62.3",
    "proto-plus<=1.28.2",
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
        "dataflow": DATAFLOW_REQUIRES,
    },
    license="Apache-2.0",
)
