"""The feature cache.

manifest.py (manifests, checksums, provenance checks, :class:`StaleCacheError`), store.py
(layout, atomic writes, chunks, features entries), stats_store.py (the training statistics
file and their versions), provenance.py (model keys, the repair command), forward.py (the
chunked model pass), builder.py (one features entry), stats_builder.py (the training
statistics, only the missing or stale ones), ensure.py (everything a benchmark needs, by name),
reader.py (a benchmark's checked read).
"""
from ood_core.cache.manifest import FORMAT_VERSION, StaleCacheError, list_cached, rebuild_command
from ood_core.cache.stats_store import load_train_stats
from ood_core.cache.store import entry_dir, is_complete, load_entry, load_features

__all__ = ["FORMAT_VERSION", "StaleCacheError", "entry_dir", "is_complete", "list_cached", "load_entry",
           "load_features", "load_train_stats", "rebuild_command"]
