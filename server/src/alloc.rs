//! A global allocator guard against allocations sized by hostile length prefixes.
//!
//! kafka-protocol decodes an array by calling `Vec::with_capacity(n)` with `n` taken straight
//! from the wire, before reading any element. A 20-byte frame claiming 2^31 topics asks for
//! hundreds of GiB; the allocation fails and Rust aborts the whole broker. The decode itself
//! would fail a moment later (the frame has no such elements), so the memory is never used.
//!
//! `GuardedAlloc` serves allocations of 1 GiB and more with `mmap(MAP_NORESERVE)`: address space
//! only, no commit charge, pages materialise when touched. The hostile request then fails to
//! decode as it should and its reservation is unmapped. Every other allocation goes to the
//! system allocator unchanged. Binaries that embed the broker install it with
//! `#[global_allocator] static A: GuardedAlloc = GuardedAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

/// Allocations at least this large are reserved lazily.
const LAZY_FROM: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct GuardedAlloc;

fn lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_FROM && layout.align() <= PAGE
}

unsafe fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no file, no existing memory involved.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from our
// own mmap of at least `layout.size()` bytes, page aligned (returned with munmap); the choice
// depends only on the layout, which callers must pass unchanged to dealloc/realloc.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            // SAFETY: see `reserve`.
            unsafe { reserve(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { reserve(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(&layout) {
            // SAFETY: `ptr` came from `reserve` with this size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy(&layout) && !lazy(&new_layout) {
            // SAFETY: both sides belong to `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate, copy the common prefix, release the old block with its own layout.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
