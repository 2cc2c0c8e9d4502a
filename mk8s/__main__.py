"""``python -m mk8s``: the same as the ``mk8s`` command."""

from mk8s.cli import main

main()
