"""Widgets that only render what screens hand them."""
