"""Large values: shared-memory segments and blob files, and the ledger of who holds them.

- ``_ledger``: each blob's segment and holders; lending segments to workers, adopting
  their outputs, wiring values to them;
- ``_manager``: ``BlobManager``, the ledger made durable: blobs recorded with the first
  record that refers to them, their files written later, clean-ups when runs end;
- ``_segments``: the segment pool (create, reuse, unlink, the room left in /dev/shm);
- ``_values``: the ledger's blob entries, the ``B`` values that keep blobs alive, and the
  process-wide resolver of ``B`` values;
- ``_recovery``: what a start does with the segments and blob files a killed engine left.
"""
