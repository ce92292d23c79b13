"""The ``neural-em`` command line: one program, one module per sub-command."""
