"""The console's routers, one per concept; each is included by ``ecokit.console.app``."""
