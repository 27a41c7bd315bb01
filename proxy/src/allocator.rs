//! The process's allocator: mimalloc, asked for plain blocks wherever a plain block has
//! the alignment the layout needs.
//!
//! The `mimalloc` crate's allocator calls `mi_malloc_aligned` for every layout. In
//! mimalloc 3 that call takes a slow path for any block over 1 KiB whose size is not a
//! power of two (a boxed request future, a connection's read buffer): it over-allocates
//! by the alignment and marks the page, which also slows the block's `free`. Callgrind
//! counted 8 such allocations per proxied keep-alive request, about a fifth of the
//! allocator's instructions (`benches/compare/instr.sh`). A plain `mi_malloc` block is
//! already aligned to 16 bytes (mimalloc's `MI_MAX_ALIGN_SIZE`), or to its size when
//! smaller, so this allocator uses `mi_malloc` for those layouts, as Rust's own
//! `System` allocator does with `malloc`, and the aligned calls for the rest.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least this size has
/// (`MI_MAX_ALIGN_SIZE`, the alignment of C's `max_align_t`).
const MIN_ALIGN: usize = 16;

/// mimalloc, with plain calls where they align enough (see the module's docs).
pub struct Allocator;

/// A plain block of `size` bytes is aligned to `align`: mimalloc aligns it to 16, or
/// to the size class when smaller (a Rust layout's size is a multiple of its alignment).
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes plain and
// aligned blocks alike); the plain calls are used only where their alignment suffices.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size and a power-of-two
        // alignment, which `Layout` guarantees.
        unsafe {
            match plain(layout.size(), layout.align()) {
                true => mi::mi_malloc(layout.size()),
                false => mi::mi_malloc_aligned(layout.size(), layout.align()),
            }
            .cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            match plain(layout.size(), layout.align()) {
                true => mi::mi_zalloc(layout.size()),
                false => mi::mi_zalloc_aligned(layout.size(), layout.align()),
            }
            .cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the new block keeps `layout`'s
        // alignment (a plain one only where it aligns enough for the new size).
        unsafe {
            match plain(new_size, layout.align()) {
                true => mi::mi_realloc(ptr.cast::<c_void>(), new_size),
                false => mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()),
            }
            .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every size class up to a few pages, at every alignment a Rust layout
    /// can ask with that size, come back aligned, writable and reallocated intact.
    #[test]
    fn blocks_have_their_layouts_alignment() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for units in [1, 2, 3, 5, 7, 9, 17, 33, 65, 129, 257, 1025] {
                let size = align * units;
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: a non-zero size; the block is freed below with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(
                        q as usize % align,
                        0,
                        "realloc to {} align {align}",
                        size * 3
                    );
                    assert!((0..size).all(|i| *q.add(i) == 0xa5));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).expect("valid"));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
