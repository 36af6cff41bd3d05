"""Large values: shared-memory segments and blob files, and the ledger of who holds them."""
