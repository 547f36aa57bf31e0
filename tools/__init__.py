"""avparse.tools: the `avparse` command and its subcommands."""
