"""ticktape: an event-sourced trading platform. Record every tick, replay every decision."""

__version__ = "0.1.0"


def code_version() -> str:
    """What run manifests record as the code that ran: `ticktape <installed version>`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ticktape {version('ticktape')}"
    except PackageNotFoundError:
        return f"ticktape {__version__} (not installed)"
