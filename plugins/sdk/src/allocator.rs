//! The allocator of a plugin built without WASI.
//!
//! An invocation runs in a fresh instance that is thrown away when it ends,
//! and most allocate a few kilobytes and free little of it before then. So
//! allocations are first carved from an arena in the plugin's own static
//! memory by moving a pointer (a free gives back only the newest block,
//! which is what a growing `Vec` or `String` frees), and once the arena is
//! used up they go to `dlmalloc`, which reuses freed memory. A long job
//! (reconcile, purge) loses at most the arena to blocks it freed early.
//!
//! `dlmalloc` takes the initial memory past the data first (see
//! `plugins/.cargo/config.toml`), so an invocation that outgrows the arena
//! still does not grow memory until that is used up too.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Bytes of the arena. It lives in the zero-initialised data, which is not
/// part of the instance's memory image, so the pages an invocation never
/// touches cost nothing; it counts against the initial memory, where 256 KiB
/// did not fit beside the time-zone tables some plugins carry.
pub const ARENA_BYTES: usize = 64 << 10;

/// A bump arena in front of another allocator.
pub struct FirstBump<A, const N: usize> {
    arena: UnsafeCell<Arena<N>>,
    /// Offset of the arena's first free byte.
    next: UnsafeCell<usize>,
    then: A,
}

#[repr(C, align(16))]
struct Arena<const N: usize>([u8; N]);

// SAFETY: plugins are single-threaded (wasm32 without threads); the native
// unit tests use one allocator per thread.
unsafe impl<A: Sync, const N: usize> Sync for FirstBump<A, N> {}

impl<A, const N: usize> FirstBump<A, N> {
    pub const fn new(then: A) -> Self {
        Self {
            arena: UnsafeCell::new(Arena([0; N])),
            next: UnsafeCell::new(0),
            then,
        }
    }

    fn base(&self) -> usize {
        self.arena.get() as usize
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + N).contains(&(ptr as usize))
    }

    /// A block from the arena, or null when it has no room for one.
    ///
    /// # Safety
    /// Not to be called from two threads at once.
    unsafe fn bump(&self, layout: Layout) -> *mut u8 {
        let next = unsafe { &mut *self.next.get() };
        let start = (self.base() + *next).next_multiple_of(layout.align());
        match start.checked_add(layout.size()) {
            Some(end) if end <= self.base() + N => {
                *next = end - self.base();
                // Keep the arena's provenance: an offset from its pointer.
                unsafe { self.arena.get().cast::<u8>().add(start - self.base()) }
            }
            _ => core::ptr::null_mut(),
        }
    }

    /// Whether the block at `ptr` of `size` bytes is the arena's newest.
    fn is_newest(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == self.base() + unsafe { *self.next.get() }
    }
}

unsafe impl<A: GlobalAlloc, const N: usize> GlobalAlloc for FirstBump<A, N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.bump(layout) };
        if ptr.is_null() {
            unsafe { self.then.alloc(layout) }
        } else {
            ptr
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Arena bytes may have been used by a block given back since.
        let ptr = unsafe { self.bump(layout) };
        if ptr.is_null() {
            unsafe { self.then.alloc_zeroed(layout) }
        } else {
            unsafe { ptr.write_bytes(0, layout.size()) };
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            return unsafe { self.then.dealloc(ptr, layout) };
        }
        if self.is_newest(ptr, layout.size()) {
            unsafe { *self.next.get() = ptr as usize - self.base() };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            return unsafe { self.then.realloc(ptr, layout, new_size) };
        }
        let fits_in_place =
            self.is_newest(ptr, layout.size()) && ptr as usize + new_size <= self.base() + N;
        if fits_in_place {
            unsafe { *self.next.get() = ptr as usize + new_size - self.base() };
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` with this alignment is a
        // valid layout.
        let grown = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = unsafe { self.alloc(grown) };
        if !moved.is_null() {
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn bumps_aligned_blocks_and_gives_back_only_the_newest() {
        let a = Box::new(FirstBump::<System, 1024>::new(System));
        unsafe {
            let x = a.alloc(layout(3, 1));
            let y = a.alloc(layout(8, 8));
            assert!(a.owns(x) && a.owns(y));
            assert_eq!(y as usize % 8, 0);
            assert_eq!(y as usize, (x as usize + 3).next_multiple_of(8));
            // Freeing an older block keeps the newer one where it is.
            a.dealloc(x, layout(3, 1));
            let z = a.alloc(layout(8, 8));
            assert_eq!(z as usize, y as usize + 8);
            // Freeing the newest makes its bytes the next block's.
            a.dealloc(z, layout(8, 8));
            assert_eq!(a.alloc(layout(8, 8)), z);
        }
    }

    #[test]
    fn grows_the_newest_block_in_place_and_moves_an_older_one() {
        let a = Box::new(FirstBump::<System, 1024>::new(System));
        unsafe {
            let x = a.alloc(layout(4, 1));
            x.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            assert_eq!(a.realloc(x, layout(4, 1), 100), x);
            let y = a.alloc(layout(4, 1));
            let moved = a.realloc(x, layout(100, 1), 200);
            assert_ne!(moved, x);
            assert_eq!(moved as usize, y as usize + 4);
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
            // Shrinking never moves.
            assert_eq!(a.realloc(moved, layout(200, 1), 10), moved);
        }
    }

    #[test]
    fn the_arena_holds_exactly_its_bytes() {
        let a = Box::new(FirstBump::<System, ARENA_BYTES>::new(System));
        unsafe {
            let all = a.alloc(layout(ARENA_BYTES, 16));
            assert!(a.owns(all) && a.owns(all.add(ARENA_BYTES - 1)));
            let next = a.alloc(layout(1, 1));
            assert!(!a.owns(next));
            a.dealloc(next, layout(1, 1));
        }
    }

    #[test]
    fn a_full_arena_hands_over_to_the_next_allocator() {
        let a = Box::new(FirstBump::<System, 64>::new(System));
        unsafe {
            let inside = a.alloc(layout(60, 1));
            assert!(a.owns(inside));
            let outside = a.alloc(layout(16, 1));
            assert!(!outside.is_null() && !a.owns(outside));
            // An arena block that cannot grow in place moves out, intact.
            inside.write_bytes(7, 60);
            let y = a.realloc(inside, layout(60, 1), 500);
            assert!(!a.owns(y));
            assert!(std::slice::from_raw_parts(y, 60).iter().all(|&b| b == 7));
            a.dealloc(y, layout(500, 1));
            a.dealloc(outside, layout(16, 1));
            // Reused arena bytes come back zeroed when asked.
            let z = a.alloc(layout(8, 1));
            z.write_bytes(9, 8);
            a.dealloc(z, layout(8, 1));
            let zeroed = a.alloc_zeroed(layout(8, 1));
            assert_eq!(zeroed, z);
            assert!(
                std::slice::from_raw_parts(zeroed, 8)
                    .iter()
                    .all(|&b| b == 0)
            );
        }
    }
}
