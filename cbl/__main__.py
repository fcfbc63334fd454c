"""``python -m cbl``: the same as ``cbl-search``."""

from cbl.cli import main

main()
