//! The engine's memory allocator: mimalloc, set in `opsdeckd`'s `main`.
//!
//! The engine allocates in one thread what another frees: the core and the
//! commit's encoding make the rows the database driver's thread binds and
//! drops, and the events the gRPC writers send. glibc's malloc handles that
//! poorly: in `opsdeckd bench`'s drain a third of the engine's time was
//! glibc's malloc and free.
//!
//! mimalloc keeps freed memory for a while before it gives it back (its
//! purge delay); [`return_freed_memory_promptly`] makes it give it back at
//! once, which costs no throughput in the bench and holds an idle engine's
//! resident memory about 17 MB lower. mimalloc commits its first arena
//! before `main` runs, so only the environment can change that:
//! `MIMALLOC_ARENA_EAGER_COMMIT=0`, which the systemd unit sets.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc.h (the same in its v2 and v3): how
/// long freed memory stays committed, in milliseconds.
const PURGE_DELAY: mi_option_t = 15;

/// Gives freed memory back to the system at once. Call first thing in
/// `main`, before any other thread starts. `MIMALLOC_PURGE_DELAY` set in
/// the environment wins: this only changes mimalloc's default.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores one option value, a plain integer
        // mimalloc reads when it next purges; no other thread runs yet.
        unsafe { mi_option_set(PURGE_DELAY, 0) };
    }
}
