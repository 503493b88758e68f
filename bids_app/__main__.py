"""``python -m bids_app`` is the same as the ``llmfbn`` command."""

from bids_app.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
