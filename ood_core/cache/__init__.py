"""The feature cache: on-disk format and validation (:mod:`.store`), building (:mod:`.builder`)."""
from ood_core.cache.store import (
    FORMAT_VERSION,
    StaleCacheError,
    entry_dir,
    is_complete,
    list_cached,
    load_entry,
    load_features,
    load_train_stats,
    rebuild_command,
)

__all__ = ["FORMAT_VERSION", "StaleCacheError", "entry_dir", "is_complete", "list_cached", "load_entry",
           "load_features", "load_train_stats", "rebuild_command"]
