"""OmniQ's benchmark suite: OmniQ on every backend side by side with its peers (see
docs/performance.md). Nothing here is imported by OmniQ itself."""
