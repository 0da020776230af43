"""`python -m kbnn.runtime --info`: where the delegate library is and which kernels this CPU runs.

    $ python -m kbnn.runtime --info
    library          .../kbnn/runtime/_kbnn_delegate.cpython-311-x86_64-linux-gnu.so
    layout version   1
    CPU can run      reference, popcnt, avx2, avx512-vpopcntdq
    kernels selected avx512-vpopcntdq

Exits 1 with how to build it if the library is missing.
"""

import argparse
import sys

import kbnn.runtime as runtime


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kbnn.runtime",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--info", action="store_true",
                        help="print the library's path and the kernels selected for this CPU")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's start-up lines")
    args = parser.parse_args(argv)
    if not args.info:
        parser.print_help()
        return 0
    try:
        path = runtime.library_path()
        levels = runtime.cpu_kernel_levels()
        selected = runtime.kernels_name()
    except (ImportError, OSError) as error:
        print(f"kbnn.runtime: {error}", file=sys.stderr)
        return 1
    print(f"library          {path}")
    print(f"layout version   {runtime.LAYOUT_VERSION}")
    print(f"CPU can run      {', '.join(levels)}")
    print(f"kernels selected {selected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
