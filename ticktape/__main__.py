"""`python -m ticktape` is the `ticktape` command."""

from ticktape.cli import main

main()
