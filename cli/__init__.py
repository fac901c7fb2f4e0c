"""The `audience-relay` command line: one subcommand per job or tool (cli/main.py), and the commands that are not Spark jobs."""
