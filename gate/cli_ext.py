"""Command groups that live beside the code they drive. Each registrar adds
sub-commands to the ``gate`` parser; their heavy imports stay inside handlers."""

from gate import demo, facecli, run
from sync import cli as sync_cli
from tui import pins

REGISTRARS: list = [run.register, facecli.register, sync_cli.register, sync_cli.register_pretix, pins.register, demo.register]
