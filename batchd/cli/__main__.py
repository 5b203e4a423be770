"""`python -m batchd.cli`: the same as the `batchd` command."""

from batchd.cli.app import main

if __name__ == "__main__":
    main()
