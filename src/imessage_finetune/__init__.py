"""Fine-tune a language model on your own iMessage history."""

# The version is looked up when asked for, not on import: importing the package is the first
# thing the command does, before it can turn a Ctrl-C into one line (launcher.py).


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imessage-finetune")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+source"
