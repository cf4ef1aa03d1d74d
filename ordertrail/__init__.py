"""The composition root: the command line and the wiring. Nothing imports it."""
