"""Command lines: ``coretex`` runs the platform's processes, ``coretexctl`` operates it."""
