"""castwall: let Cast devices through ufw, one narrow rule per device."""

__version__ = "0.1.0"
