"""CLI commands that live in their own modules (``mlwatch query``, ``mlwatch import``).

They use ``mlwatch.cli``'s common options, and ``mlwatch.cli`` registers them when it loads; loading
``mlwatch.cli`` first (here) keeps that cycle working whichever module is imported first.
"""

import mlwatch.cli  # noqa: F401
