"""The configuration wing: gin files, parsing, overrides and every user setting's checks."""
