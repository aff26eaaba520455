"""Self-hostable security event tracking for Python web apps."""
