"""``python -m traitpipe``: the same as the ``traitpipe`` command."""

from traitpipe.cli import main

main()
