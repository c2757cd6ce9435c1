"""Allow ``python -m mnist_cli``."""

from mnist_cli.cli import main

if __name__ == "__main__":
    main()
