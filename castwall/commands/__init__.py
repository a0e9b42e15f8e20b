"""What each castwall command does, one module per command.

cli.py declares the commands and imports a command's module only when it runs,
so --help and --version load none of this.
"""
