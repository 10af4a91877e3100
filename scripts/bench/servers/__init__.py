"""The servers under test: meshsub-trio's bench app and its peers."""
