"""Attention explorer: capture a Transformer's attention and draw it (app, CLI, notebooks).

The version below is the package's only version number (pyproject.toml reads it).
"""
__version__ = "0.1.0"
