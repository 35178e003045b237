"""Class-agnostic mask proposers."""
