"""Repository wikis: the deepwiki-compatible page model, the client cache, exports (and, next, generation)."""
