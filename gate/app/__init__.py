"""The shells: command line, lane runner, demo. The only part of gate/ that
imports hardware/, sync/ and tui/."""
