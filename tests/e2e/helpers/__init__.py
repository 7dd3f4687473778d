"""The modules behind e2e_helper.py (see its docstring for the subcommands)."""
