//! Handing the memory a checkpoint freed back to the operating system.
//!
//! glibc's malloc gives each thread that allocates an arena of its own and returns freed
//! memory to the system only from the top of each. The pages the checkpointer moves into
//! redb, the batches a writer encodes and the pages redb's cache evicts are allocated on
//! one thread and freed on another, so free space stays behind in every arena: a process
//! that loaded 5M rows in batches held 296 MiB resident with a page cache of 128 MiB
//! (`benches/bench_disk.py`), 185 MiB once the checkpointer called `malloc_trim` after
//! each checkpoint. It walks every arena and gives their free pages back: about a
//! millisecond each while loading in batches of 10k rows, but 10-15 ms after one
//! `put_many` of 1M rows, during which a thread that allocates in the arena being trimmed
//! waits. So a load that large trims on its own thread before it returns (see
//! `streamed`), and the checkpointer's trims find little left in the writer's arena.

/// Gives the free pages of every malloc arena back to the system (glibc only; a no-op
/// elsewhere, where the allocator returns memory its own way).
pub(super) fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer and only rearranges the allocator's own free
    // lists, under the allocator's locks; any thread may call it at any time.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
