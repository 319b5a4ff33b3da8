"""ftlib: the tested code behind the fine-tuning course notebooks."""

__version__ = "0.1.0"
