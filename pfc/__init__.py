"""pfc: the command-line entry point that ties the toolkit together (``pfc --help``)."""
