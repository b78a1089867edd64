"""Domain-free example packs and workers."""
