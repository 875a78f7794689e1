"""The studio's bookkeeping, without torch: jobs and their queue, the SQLite store that survives a crash,
History, output files and paths, settings and the log buffer."""
