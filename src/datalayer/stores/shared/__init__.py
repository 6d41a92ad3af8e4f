"""Helpers more than one store type uses; stores never import from each other."""
