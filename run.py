#!/usr/bin/env python3
"""hihtrack: real-time face landmarks with Heatmap-In-Heatmap. The command line lives in hihtrack/cli.py
(installed as the `hihtrack` command); this file runs it from a checkout.

    python run.py [track] [--source 0|FILE|FOLDER|URL|demo] [--ui opencv|gradio|none] ...
    python run.py --help
"""
import sys

from hihtrack.cli import main

if __name__ == "__main__":
    sys.exit(main())
