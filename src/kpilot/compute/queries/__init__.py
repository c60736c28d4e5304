"""One module per query kind; each compiles its spec to SQL through the shared QueryContext."""
