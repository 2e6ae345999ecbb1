"""The one cache policy of the scorers: a bounded, thread-safe memo (:class:`Memo`).

Sliders re-score the same cached tensors many times, and Streamlit serves every session
from one process, so one fitted scorer (and its memos) is shared by threads. Every memo of
a scorer is a :class:`Memo`:

* **bounded by bytes** (and by entries), least recently used first out; an entry replaced
  with :meth:`Memo.put` is counted again, and a result larger than the whole bound is
  returned without being kept, so the tensors a memo holds never exceed ``max_bytes``;
* **thread-safe**: lookups and updates hold a lock; the work itself runs outside it, so a
  slow computation never blocks another session's lookup (two threads missing the same key
  both compute it; either result is kept, they are equal);
* **keyed by value or by tensor**: ``key`` is any hashable value (a hyperparameter setting);
  with ``tensor=`` the entry also belongs to that very tensor, and is used only while it is
  alive and unmodified (weak reference and in-place version counter), so a freed tensor's
  reused ``id`` never hits and its entries are dropped when it is freed;
* **cleared on refit**: :meth:`ood_core.scorers.base.Scorer.fit` clears every memo of the
  scorer (results under an earlier fit are stale).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

from torch import Tensor

T = TypeVar("T")

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB per memo
_SEEN_ONCE = object()  # reused_only: the key was seen once, nothing computed yet


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(value, Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _version(tensor: Tensor) -> int:
    return -1 if tensor.is_inference() else tensor._version  # inference tensors cannot change in place


class Memo:
    """An LRU memo bounded by ``max_bytes`` of tensors and ``max_entries`` entries."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = 64) -> None:
        self.max_bytes = int(max_bytes)
        self.max_entries = int(max_entries)
        self._lock = threading.RLock()  # re-entrant: a weakref callback may fire while it is held
        # (tensor id or None, key) → (weakref or None, version, value, bytes)
        self._entries: "OrderedDict[tuple[int | None, Hashable], tuple[Any, int, Any, int]]" = OrderedDict()
        self._bytes = 0

    # -- lookups ----------------------------------------------------------------------
    def get(self, key: Hashable, compute: Callable[[], T], tensor: Tensor | None = None,
            reused_only: bool = False, expected_bytes: int = 0) -> T | None:
        """``compute()``, memoised under ``key`` (and ``tensor``, when given).

        ``reused_only``: return None the first time the key is seen (remembering only that it
        was), so a one-off call takes the caller's direct path and the result is built when
        the key comes again (a slider move). ``expected_bytes``: the result's size; with
        ``reused_only``, above half the bound nothing is computed and None is returned (such
        results would evict each other on every call: the direct path is cheaper).
        """
        if reused_only and expected_bytes > self.max_bytes // 2:
            return None
        slot = (None if tensor is None else id(tensor), key)
        version = None if tensor is None else _version(tensor)
        with self._lock:
            entry = self._valid(slot, tensor, version)
            if entry is not None and entry[2] is not _SEEN_ONCE:
                self._entries.move_to_end(slot)
                return entry[2]
            if reused_only and entry is None:
                self._store(slot, tensor, version, _SEEN_ONCE)
                return None
        value = compute()  # outside the lock: other sessions' lookups need not wait
        with self._lock:
            self._store(slot, tensor, version, value)
        return value

    def put(self, key: Hashable, value: Any, tensor: Tensor | None = None) -> None:
        """Replace what is memoised under ``key`` (a refined result); its size is counted again."""
        with self._lock:
            self._store((None if tensor is None else id(tensor), key), tensor,
                        None if tensor is None else _version(tensor), value)

    def clear(self, tensors_only: bool = False) -> None:
        """Drop every entry, or with ``tensors_only`` only those tied to a tensor (the
        entries keyed by a hyperparameter value stay)."""
        with self._lock:
            for slot in [s for s in self._entries if not tensors_only or s[0] is not None]:
                self._drop(slot)

    @property
    def nbytes(self) -> int:
        """Bytes of tensors held now (never above ``max_bytes``)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals (lock held) -------------------------------------------------------------
    def _valid(self, slot: tuple, tensor: Tensor | None, version: int | None) -> tuple | None:
        entry = self._entries.get(slot)
        if entry is None:
            return None
        if tensor is not None and (entry[0] is None or entry[0]() is not tensor or entry[1] != version):
            self._drop(slot)  # another tensor at a reused id, or this one modified in place
            return None
        return entry

    def _store(self, slot: tuple, tensor: Tensor | None, version: int | None, value: Any) -> None:
        size = tensor_bytes(value)
        self._drop(slot)
        if size > self.max_bytes:
            return  # never kept: it alone would break the bound
        # Make room first (least recently used out), so the count never exceeds the bound.
        while self._entries and (self._bytes + size > self.max_bytes or len(self._entries) >= self.max_entries):
            self._drop(next(iter(self._entries)))
        ref = None if tensor is None else weakref.ref(tensor, self._forget_tensor(slot[0]))
        self._entries[slot] = (ref, -1 if version is None else version, value, size)
        self._bytes += size

    def _drop(self, slot: tuple) -> None:
        entry = self._entries.pop(slot, None)
        if entry is not None:
            self._bytes -= entry[3]

    def _forget_tensor(self, tensor_id: int | None) -> Callable[[Any], None]:
        """A weakref callback dropping the entries of a freed tensor (they can never hit again)."""
        memo = weakref.ref(self)

        def forget(ref: Any) -> None:
            owner = memo()
            if owner is None:
                return
            with owner._lock:
                for slot in [s for s, e in owner._entries.items() if s[0] == tensor_id and e[0] is ref]:
                    owner._drop(slot)

        return forget
