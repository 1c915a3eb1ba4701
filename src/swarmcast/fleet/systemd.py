"""``swarmcast fleet systemd --output DIR``: systemd units for the fleet (filled in below)."""

from __future__ import annotations

import argparse


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    del subs
