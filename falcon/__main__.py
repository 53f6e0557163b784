"""``python -m falcon``: the same as the ``falcon`` command."""

from falcon.cli import main

main(prog_name="falcon")
