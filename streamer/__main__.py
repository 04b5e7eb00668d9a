"""`python -m streamer` runs the `emostream` command line."""

from streamer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
