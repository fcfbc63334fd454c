"""cbl: hyperparameter search for audio deepfake detection with a bonafide-only cluster metric loss."""

__version__ = "0.3.0"
__all__ = ["__version__"]
