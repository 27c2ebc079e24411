"""Regenerate window.png and strip.png from a sweep's output folder.

    python -m diffusion_windows.plot DIR [--out OUT_DIR] [--dpi 150]

Reads only the folder's files (windows.json, strip.safetensors, strip.json); never
loads a model. Bad input exits with status 2 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def main(argv=None) -> int:
    parser = _Parser(prog="python -m diffusion_windows.plot", description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a sweep's output folder (holds windows.json)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: DIR)")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNGs")
    args = parser.parse_args(argv)
    if args.dpi <= 0:
        parser.error(f"--dpi must be positive, got {args.dpi}")

    import matplotlib

    matplotlib.use("Agg")
    from diffusion_windows.plotting import save_plots

    try:
        paths = save_plots(args.dir, out=args.out, dpi=args.dpi)
    except (ValueError, OSError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.stderr.write(f"error: {msg}\n")
        return 2
    for p in paths:
        print(p)
    if len(paths) == 1:
        sys.stderr.write(f"note: no strip.safetensors/strip.json in {args.dir}; "
                         "strip.png not written\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
