"""rocmforge: study and speed up LLM inference on AMD GPUs."""

__version__ = "0.1.0"
