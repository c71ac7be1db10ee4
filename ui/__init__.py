"""The faces of supportbot: the `supportbot` command line and the web app."""
