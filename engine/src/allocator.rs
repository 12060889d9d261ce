//! The engine's memory allocator: mimalloc, set in `opsdeckd`'s `main`.
//!
//! The engine allocates in one thread what another frees: the core and the
//! commit's encoding make the rows the database driver's thread binds and
//! drops, and the events the gRPC writers send. glibc's malloc handles that
//! poorly; in `opsdeckd bench`'s drain a third of the engine's time was
//! glibc's malloc and free, and with mimalloc the drain runs 1.3–1.8× as
//! fast.
//!
//! mimalloc's defaults keep freed memory committed for a while and commit
//! its arenas eagerly, which costs an idle engine about 30 MB of resident
//! memory for no gain in throughput (measured with the bench's `restart`
//! and `drain`); [`return_freed_memory_promptly`] turns both off.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// `mi_option_arena_eager_commit` in mimalloc.h (the same in v2 and v3).
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc.h (the same in v2 and v3): how long
/// freed memory stays committed, in milliseconds.
const PURGE_DELAY: mi_option_t = 15;

/// Gives freed memory back to the OS at once and commits arenas on demand.
/// Call first thing in `main`, before any other thread starts. An
/// environment variable (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`)
/// set by an operator still wins: these are only mimalloc's defaults.
pub fn return_freed_memory_promptly() {
    for (option, name) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY"),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: mi_option_set stores one option value; the options are
            // plain integers mimalloc reads when it next needs them, and no
            // other thread runs yet.
            unsafe { mi_option_set(option, 0) };
        }
    }
}
