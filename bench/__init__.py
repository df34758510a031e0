"""tlbench: a benchmark harness for transfer learning."""
import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA stubs) would bury the progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
