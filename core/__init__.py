"""The ground floor: exit codes and errors, atomic writes, the one file/run lock, and Settings.

Every package (``tools``, ``evals``, ``agent``, the app) may import ``core``; ``core`` imports
none of them. Nothing else lives here.
"""
