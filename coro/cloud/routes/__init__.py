"""The cloud's routers, one per concept."""
