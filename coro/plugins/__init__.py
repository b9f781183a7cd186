"""Source-control and tracker plugins (built-ins are plugins on the same interfaces)."""
