"""The harness's own Relax passes, one file per pass."""
from .apply_database import apply_database_pass
from .pad_conv_width import pad_conv_width_pass

__all__ = ["apply_database_pass", "pad_conv_width_pass"]
