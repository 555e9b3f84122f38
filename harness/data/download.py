"""`python -m harness.data.download fashion-mnist`: fetch Fashion-MNIST with torchvision (needs internet).

Used by scripts/setup.sh where Debian's dataset-fashion-mnist package cannot be installed.
"""
import sys
from pathlib import Path

from harness.core.weights import cache_dir


def main(argv: list[str]) -> int:
    if argv != ["fashion-mnist"]:
        print("usage: python -m harness.data.download fashion-mnist", file=sys.stderr)
        return 2
    from torchvision.datasets import FashionMNIST
    root = cache_dir() / "data"
    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    print(f"Fashion-MNIST downloaded to {Path(root) / 'FashionMNIST' / 'raw'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
