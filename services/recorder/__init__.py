"""The recorder's storage layer: the per-session append-only archive and the session registry.

- segment.py: byte layout of a segment and a scanner that reports damage;
- archive.py: ArchiveWriter (group commit, rolls, checkpoints) and ArchiveReader;
- integrity.py: verify / recover over the same walk of the log;
- checkpoint.py: checkpoint.json (chain head outside the log, optional HMAC);
- registry.py / pseudonyms.py: the SQLite registry and the separate token map.

FORMAT.md in this folder specifies the files.
"""
