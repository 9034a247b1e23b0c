"""The terminal UI (Textual): Overview, Explorer, Alerts, Notifications and Sources screens.

Screens collect in thread workers through :class:`mlwatch.readside.TuiData` and draw from the
Messages those workers post; widgets only render.
"""
