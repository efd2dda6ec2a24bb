"""shadow-proxy: tee prediction traffic to shadow models and measure them against production."""

__version__ = "0.1.0"
