"""`emostream devices`: list the audio input devices."""

from __future__ import annotations

import argparse
import sys

from streamer.errors import DeviceError


def configure(p: argparse.ArgumentParser) -> None:
    """`devices` has no options."""


def run(args: argparse.Namespace) -> int:
    """List the audio input devices, one a line."""
    from streamer.mic import list_devices

    devices = list_devices()
    if not devices:
        raise DeviceError("no audio input device found (PortAudio sees none)")
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark}{d['index']:>3}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, "
              f"{d['sample_rate']:g} Hz)")
    print("* default input; choose one with: emostream serve --mic --device INDEX|NAME", file=sys.stderr)
    return 0
