"""``python -m cbl.cli``: the same as ``cbl-search`` (and ``python -m cbl``)."""

from cbl.cli.app import main

main()
