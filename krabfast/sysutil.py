"""Process-level settings for a server holding many sockets."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: every client is a descriptor.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Make glibc serve every allocation of `nbytes` or more with its own mmap.

    Big buffers here are frames queued for slow sockets. glibc's adaptive threshold would
    move them into the heap after the first few are freed, and a heap fragmented by a
    burst for a slow consumer keeps RSS high long after the consumer is gone. Pinned,
    each freed big buffer goes straight back to the OS. Returns False off glibc."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
