"""Configuration: composition of conf/ and params.yaml, the typed schema of every group, the values
keys accept, and the errors a user can fix.
"""
