"""The main job: train and evaluate the default suite on Fashion-MNIST and write its tables.

`python run_all.py [--suite NAME] [--out DIR]` is `vqbench run NAME --out DIR` with NAME = default.
"""
import argparse
import sys

from harness.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="default", help="suite name (`vqbench list suites`; smoke: < 5 min)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<suite>)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    a = parser.parse_args()
    argv = ["run", a.suite, "--device", a.device] + (["--out", a.out] if a.out else []) + (["--quiet"] if a.quiet else [])
    sys.exit(main(argv))
