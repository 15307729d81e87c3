"""fdk: a workbench for fast data-free knowledge distillation (FastDFKD, Fang et al., AAAI 2022)."""

__version__ = "0.1.0"
