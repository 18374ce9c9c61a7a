"""Base models by Hub id, folder or single file: where they come from, their family, loading, and
identity.
"""
