"""Fine-tune a language model on your own iMessage history."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imessage-finetune")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
