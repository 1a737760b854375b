"""Files that must survive crashes and concurrent runs: JSONL records and run-directory locks."""
