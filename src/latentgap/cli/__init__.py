"""The ``latentgap`` command line: one module per subcommand."""
