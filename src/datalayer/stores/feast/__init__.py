"""The feature category on Feast, with fast paths that give the same answers as Feast."""
