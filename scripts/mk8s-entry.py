"""Entry point of the single-file executable (see scripts/build-exe.sh)."""

from mk8s.cli import main

main()
