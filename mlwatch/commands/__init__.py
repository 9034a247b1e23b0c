"""CLI commands that live in their own modules (``mlwatch query``, ``mlwatch import``)."""
