"""Backbone backends."""
