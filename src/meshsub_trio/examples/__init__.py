"""Example applications shipped with meshsub-trio."""
