"""Command groups that live beside the code they drive. Each registrar adds
sub-commands to the ``gate`` parser; their heavy imports stay inside handlers."""

from gate import demo, run

REGISTRARS: list = [run.register, demo.register]
