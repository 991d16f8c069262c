"""squad-pipeline: extractive question answering with TensorFlow, DVC, Hydra and MLflow."""

import os

# Hugging Face's TF models need Keras 2 (tf-keras); TF 2.21 defaults to Keras 3.
# This must be set before TensorFlow is imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
